import torch, sys
from hf_loglinear.ops import LevelState, loglinear_attention
torch.manual_seed(0)
def inp(n,T,H,K,V,L,dt,delta):
    x=[torch.randn(n,T,1,K,dtype=dt)*K**-.5, torch.nn.functional.normalize(torch.randn(n,T,1,K,dtype=dt),dim=-1), torch.randn(n,T,H,V,dtype=dt), -torch.rand(n,T,H,dtype=dt)*.05, torch.rand(n,T,H,L,dtype=dt), torch.rand(n,T,H,dtype=dt) if delta else None]
    return [a if a is None else a.cuda() for a in x]
for delta in (False, True):
  for (H,K,V) in ((2,16,16),(2,128,64)):
    for L in (1, 8, 12):
      for use_init in (False, True):
        x = inp(2,300,H,K,V,L,torch.float32,delta)
        init=None
        if use_init:
            p = inp(2,200,H,K,V,L,torch.float64,delta)
            _, init = loglinear_attention(*p[:5], beta=p[5], output_final_state=True, backend="torch")
        i32 = None if init is None else LevelState(init.levels.float(), init.position)
        o, st = loglinear_attention(*x[:5], beta=x[5], initial_state=i32, output_final_state=True, backend="triton")
        xd=[a if a is None else a.double() for a in x]
        o2, st2 = loglinear_attention(*xd[:5], beta=xd[5], initial_state=init, output_final_state=True, backend="torch")
        e = (o.double()-o2).abs().amax(dim=(0,2,3))/o2.abs().max()
        bad = (e>1e-4).nonzero().flatten().tolist()
        print(f"delta={delta} K={K} L={L} init={use_init}: o {e.max().item():.1e} final {((st.levels-st2.levels).abs().max()/st2.levels.abs().max()).item():.1e} bad {bad[:3]}..{bad[-3:]} n={len(bad)}", flush=True)
from hf_loglinear.kernels.recurrent import recurrent_step
for delta in (False, True):
    N,H,K,V,L=4,6,128,64,15
    x = inp(N,300,H,K,V,L,torch.float32,delta)
    _, st = loglinear_attention(*x[:5], beta=x[5], output_final_state=True, backend="torch")
    ref = st.levels.clone(); pos = st.position.clone()
    for _ in range(3):
        y = [a[:, 0] if a is not None else None for a in inp(N,1,H,K,V,L,torch.float32,delta)]
        from hf_loglinear.ops import loglinear_attention_step
        o, st = loglinear_attention_step(st, *y[:5], beta=y[5], backend="triton")
        o2, ref = recurrent_step(ref, pos, *y[:5], beta=y[5]); pos = pos + 1
        print("step", delta, ((o-o2).abs().max()/o2.abs().max()).item(), ((st.levels-ref).abs().max()/ref.abs().max()).item(), flush=True)
