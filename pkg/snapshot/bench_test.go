package snapshot

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/model"
)

// gpt2State is the whole state of one data-parallel rank of the
// gpt2-shape preset under AdamW: every parameter plus its two moments
// (3 × 4 bytes per parameter), as train's captureState lays it out.
var gpt2State = sync.OnceValues(func() (*RankState, error) {
	cfg, err := model.Preset("gpt2-shape")
	if err != nil {
		return nil, err
	}
	m, err := model.New(cfg, 1, false)
	if err != nil {
		return nil, err
	}
	st := &RankState{Job: "bench", Step: 1000, Rank: 0, Meta: []byte(`{"cursor":{"step":1000}}`)}
	for _, p := range m.Params() {
		st.Tensors = append(st.Tensors, StateTensor{Name: "param." + p.Name, Shape: p.Shape, Data: p.W})
		for _, slot := range []string{"exp_avg", "exp_avg_sq"} {
			d := make([]float32, len(p.W))
			for i, w := range p.W {
				d[i] = w * 1e-3
			}
			st.Tensors = append(st.Tensors, StateTensor{Name: "optim." + p.Name + "." + slot, Shape: p.Shape, Data: d})
		}
	}
	return st, nil
})

func benchState(b *testing.B) *RankState {
	st, err := gpt2State()
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// benchCodes are (k, m) = (2, 1) and (4, 2) with m the tolerance (no
// parity and one parity fragment: the local copy is the other "parity"),
// and the same k with m−1 = 1 and 2 parity fragments, classic RS(2,1)
// and RS(4,2).
// cpuTime is the CPU time this process has used, user and system. The
// benchmarks report it per operation besides the wall time, because on a
// shared 2-core machine the wall time mostly measures the other load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per operation since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e6, "cpu-ms/op")
}

var benchCodes = []Code{{K: 2, M: 1}, {K: 4, M: 2}, {K: 2, M: 2}, {K: 4, M: 3}}

// BenchmarkMarshalState is the copy on the training path: the whole
// state into one shard, with CRC32C per tensor.
func BenchmarkMarshalState(b *testing.B) {
	st := benchState(b)
	buf, err := MarshalState(st, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	c0 := cpuTime()
	for b.Loop() {
		if _, err := MarshalState(st, 0); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, c0)
}

// BenchmarkEncode cuts a staged gpt2-shape state into fragments: parity
// and a CRC32C of the state and of every fragment. Bytes are the state's.
func BenchmarkEncode(b *testing.B) {
	st := benchState(b)
	for _, c := range benchCodes {
		b.Run(fmt.Sprintf("k%dm%d", c.K, c.M), func(b *testing.B) {
			n, _ := MarshalState(st, 0)
			buf, err := MarshalState(st, c.Reserve(len(n)))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			c0 := cpuTime()
			for b.Loop() {
				if _, err := Encode(st.Job, st.Step, st.Rank, buf, c); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, c0)
		})
	}
}

// BenchmarkDecode rebuilds the state from the last k fragments, so with
// parity data fragment 0 is missing and reconstructed: verify every
// fragment, reconstruct, join, check the state CRC. Bytes are the
// state's.
func BenchmarkDecode(b *testing.B) {
	st := benchState(b)
	for _, c := range benchCodes {
		b.Run(fmt.Sprintf("k%dm%d", c.K, c.M), func(b *testing.B) {
			buf, err := MarshalState(st, 0)
			if err != nil {
				b.Fatal(err)
			}
			frags, err := Encode(st.Job, st.Step, st.Rank, buf, c)
			if err != nil {
				b.Fatal(err)
			}
			want := Expect{Job: st.Job, Step: st.Step, Rank: st.Rank, Code: c, StateBytes: int64(len(buf)), StateCRC: frags[0].StateCRC}
			in := frags[len(frags)-c.K:]
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			c0 := cpuTime()
			for b.Loop() {
				if _, err := Decode(want, in); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, c0)
		})
	}
}

// BenchmarkPeerManifest1000Ranks reports the committed manifest's size at
// 1,000 ranks (one per worker, 40 racks) for k=8 m=2.
func BenchmarkPeerManifest1000Ranks(b *testing.B) {
	m := manifestAt(b, 1000, 2, 8)
	var n int
	for b.Loop() {
		buf, err := MarshalPeerManifest(m)
		if err != nil {
			b.Fatal(err)
		}
		n = len(buf)
	}
	b.ReportMetric(float64(n), "bytes")
	b.ReportMetric(float64(n)/1000, "bytes/rank")
}

// BenchmarkRestoreLoopback restores one rank's gpt2-shape state from its
// peers' fragments over real gRPC on loopback, 4 ranks, one per worker:
// k fragments fetched at once, verified, decoded, state CRC checked.
// Bytes are the state's.
func BenchmarkRestoreLoopback(b *testing.B) {
	st := benchState(b)
	for _, c := range []Code{{K: 3, M: 1}, {K: 2, M: 2}} {
		b.Run(fmt.Sprintf("k%dm%d", c.K, c.M), func(b *testing.B) {
			const world, lost = 4, 2
			p, rankWorker := flatPlacement(b, world, c.M, c.K)
			trs := grpcRanks(b, world, 1)
			holders := make([]*Holder, world)
			svcs := make([]*PeerService, world)
			for r := range world {
				holders[r] = NewHolder()
				svcs[r] = StartPeerService(trs[r], holders[r])
			}
			defer func() {
				for _, s := range svcs {
					s.Close()
				}
			}()
			mine := *st
			mine.Rank = lost
			buf, err := MarshalState(&mine, 0)
			if err != nil {
				b.Fatal(err)
			}
			frags, err := Encode(mine.Job, mine.Step, lost, buf, c)
			if err != nil {
				b.Fatal(err)
			}
			m := &PeerManifest{Job: mine.Job, Step: mine.Step, Code: c, Workers: rankWorker, Ranks: make([]RankEntry, world)}
			e := RankEntry{StateBytes: int64(len(buf)), StateCRC: frags[0].StateCRC}
			for i, f := range frags {
				w := p.Holders[lost][i]
				if err := holders[ServingRank(rankWorker, w)].Put(&f); err != nil {
					b.Fatal(err)
				}
				e.FragmentCRCs = append(e.FragmentCRCs, f.CRC)
				e.Holders = append(e.Holders, ServingRank(rankWorker, w))
			}
			m.Ranks[lost] = e
			rankOf := func(w string) int { return ServingRank(rankWorker, w) }
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			c0 := cpuTime()
			for b.Loop() {
				got, err := svcs[lost].Restore(context.Background(), m, lost, rankOf)
				if err != nil || len(got) != len(buf) {
					b.Fatalf("restore: %d bytes, %v", len(got), err)
				}
			}
			reportCPU(b, c0)
		})
	}
}
