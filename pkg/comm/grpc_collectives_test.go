package comm

import (
	"context"
	"math"
	"sync"
	"testing"
)

// TestGRPCAllReduceMatchesMem runs the ring all-reduce over real gRPC
// streams and over the in-memory transport: the results must be bitwise
// identical, and so must the payload bytes each rank counts.
func TestGRPCAllReduceMatchesMem(t *testing.T) {
	const world, n = 3, 300_001 // several parts per ring segment with small parts
	xs := make([][]float32, world)
	for r := range xs {
		xs[r] = make([]float32, n)
		for i := range xs[r] {
			xs[r][i] = float32(math.Sin(float64(i*(r+1)))) * float32(1+i%7)
		}
	}
	run := func(trs []Transport) ([][]float32, []Stats) {
		out := make([][]float32, world)
		errs := make([]error, world)
		var wg sync.WaitGroup
		for r, tr := range trs {
			out[r] = append([]float32(nil), xs[r]...)
			g, err := NewSubGroup(tr, []int{0, 1, 2}, GroupOptions{MaxPartBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				for _, op := range []Op{Sum, Mean} {
					if err := g.AllReduce(context.Background(), out[r], op, WireFloat32); err != nil {
						errs[r] = err
						return
					}
				}
			})
		}
		wg.Wait()
		stats := make([]Stats, world)
		for r, err := range errs {
			if err != nil {
				t.Fatalf("rank %d: %v", r, err)
			}
			stats[r] = trs[r].Stats()
		}
		return out, stats
	}

	mem, err := NewMemNetwork(world, MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	memTrs := make([]Transport, world)
	for r, tr := range mem {
		memTrs[r] = tr
		defer tr.Close()
	}
	grpcTrs := make([]Transport, world)
	for r, tr := range newGRPCNet(t, world, func(_ int, o *GRPCOptions) { o.ChunkBytes = 16 << 10 }) {
		grpcTrs[r] = tr
	}
	want, memStats := run(memTrs)
	got, grpcStats := run(grpcTrs)
	for r := range got {
		for i := range got[r] {
			if math.Float32bits(got[r][i]) != math.Float32bits(want[r][i]) {
				t.Fatalf("rank %d value %d: %v over gRPC, %v in memory", r, i, got[r][i], want[r][i])
			}
		}
		gs, ms := grpcStats[r], memStats[r]
		if gs.SentByKind[KindAllReduce].Payload != ms.SentByKind[KindAllReduce].Payload || gs.Recv.Payload != ms.Recv.Payload {
			t.Errorf("rank %d: payload sent %d received %d over gRPC, %d and %d in memory", r,
				gs.SentByKind[KindAllReduce].Payload, gs.Recv.Payload, ms.SentByKind[KindAllReduce].Payload, ms.Recv.Payload)
		}
	}
}
