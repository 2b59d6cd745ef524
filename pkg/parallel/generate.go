package parallel

import "fmt"

// The generators emit compute ops only (F and B); vocabulary ops, sends,
// receives and collectives are added by separate passes, so each schedule
// shape is written once and combined with every vocabulary placement.

// gpipe runs every forward, then every backward (Huang et al., "GPipe",
// 2019): each stage keeps activations of all m microbatches.
func gpipe(p, m int) [][]Op {
	out := make([][]Op, p)
	for r := range out {
		ops := make([]Op, 0, 2*m)
		for i := range m {
			ops = append(ops, computeOp(F, r, i))
		}
		for i := range m {
			ops = append(ops, computeOp(B, r, i))
		}
		out[r] = ops
	}
	return out
}

// oneFOneB is the non-interleaved 1F1B schedule (PipeDream-Flush; Narayanan
// et al., "Efficient Large-Scale Language Model Training on GPU Clusters
// Using Megatron-LM", 2021, §2.2.1): stage r runs w = p−r−1+extra warmup
// forwards, then alternates one forward and one backward, then drains the
// remaining backwards. With extra = 0 stage r holds at most p−r microbatches'
// activations; each extra warmup forward adds one on every stage, which the
// vocabulary-parallel schedules use to cover their barriers (the reference
// implementation's warmup of p−r, one more than plain 1F1B).
func oneFOneB(p, m, extra int) [][]Op {
	out := make([][]Op, p)
	for r := range out {
		w := min(p-r-1+extra, m)
		ops := make([]Op, 0, 2*m)
		for i := range w {
			ops = append(ops, computeOp(F, r, i))
		}
		for j := 0; j < m-w; j++ {
			ops = append(ops, computeOp(F, r, w+j), computeOp(B, r, j))
		}
		for j := max(m-w, 0); j < m; j++ {
			ops = append(ops, computeOp(B, r, j))
		}
		out[r] = ops
	}
	return out
}

// addP2P adds the point-to-point ops around the compute ops: a receive
// immediately before the F or B that consumes it, a send immediately after
// the F or B that produces it. Sends are asynchronous, so placing each
// receive as late as possible and each send as early as possible never adds
// a wait that the compute order does not already imply.
func addP2P(stages [][]Op) [][]Op {
	p := len(stages)
	out := make([][]Op, p)
	for r, ops := range stages {
		n := make([]Op, 0, 2*len(ops))
		for _, o := range ops {
			switch {
			case o.Kind == F && r > 0:
				n = append(n, Op{Kind: RecvAct, Stage: r, MB: o.MB, Peer: r - 1, Coll: -1})
			case o.Kind == B && r < p-1:
				n = append(n, Op{Kind: RecvGrad, Stage: r, MB: o.MB, Peer: r + 1, Coll: -1})
			}
			n = append(n, o)
			switch {
			case o.Kind == F && r < p-1:
				n = append(n, Op{Kind: SendAct, Stage: r, MB: o.MB, Peer: r + 1, Coll: -1})
			case o.Kind == B && r > 0:
				n = append(n, Op{Kind: SendGrad, Stage: r, MB: o.MB, Peer: r - 1, Coll: -1})
			}
		}
		out[r] = n
	}
	return out
}

// generate dispatches on the schedule name.
func generate(name string, p, m, extra int) ([][]Op, error) {
	switch name {
	case Schedule1F1B:
		return oneFOneB(p, m, extra), nil
	case ScheduleGPipe:
		if extra != 0 {
			return nil, fmt.Errorf("schedule %s has no warmup to extend", name)
		}
		return gpipe(p, m), nil
	}
	return nil, fmt.Errorf("schedule %q not allowed (allowed: %s, %s)", name, Schedule1F1B, ScheduleGPipe)
}

// Schedule names.
const (
	Schedule1F1B  = "1f1b"
	ScheduleGPipe = "gpipe"
)
