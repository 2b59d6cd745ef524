package comm

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkAllReduce measures the ring all-reduce on the in-memory
// transport. The MB/s column is algorithm bandwidth: the bytes of x (4 per
// value) over the time of one all-reduce on all ranks, so it compares
// across W; each rank moves about 2(W-1)/W times that. On one machine the
// ranks share the cores, so the figure is an upper bound on what the
// collective's own work (encoding, copying, adding) allows, not a network
// measurement.
//
//	go test -run '^$' -bench AllReduce ./pkg/comm/
func BenchmarkAllReduce(b *testing.B) {
	for _, w := range []int{2, 4} {
		for _, mib := range []int{1, 4, 16, 64} {
			for _, wire := range []Wire{WireFloat32, WireBF16} {
				b.Run(fmt.Sprintf("W=%d/%dMiB/%v", w, mib, wire), func(b *testing.B) {
					n := mib << 20 / 4
					net := newNet(b, w, MemOptions{})
					gs := groups(net)
					xs := randVectors(1, w, n)
					b.SetBytes(int64(4 * n))
					b.ResetTimer()
					for range b.N {
						var wg sync.WaitGroup
						errs := make([]error, w)
						for r := range w {
							wg.Go(func() { errs[r] = gs[r].AllReduce(context.Background(), xs[r], Mean, wire) })
						}
						wg.Wait()
						for r, err := range errs {
							if err != nil {
								b.Fatalf("rank %d: %v", r, err)
							}
						}
					}
				})
			}
		}
	}
}

// BenchmarkGRPCAllReduce is BenchmarkAllReduce over real gRPC streams on
// loopback, all ranks in this process: algorithm bandwidth (bytes of x per
// second), float32 on the wire.
//
//	go test -run '^$' -bench GRPCAllReduce -benchtime 3x ./pkg/comm/
func BenchmarkGRPCAllReduce(b *testing.B) {
	for _, w := range []int{2, 4} {
		for _, mib := range []int{1, 4, 16, 64, 256} {
			b.Run(fmt.Sprintf("W=%d/%dMiB", w, mib), func(b *testing.B) {
				n := mib << 20 / 4
				trs := newGRPCNet(b, w, nil)
				gs := make([]*Group, w)
				for r, tr := range trs {
					gs[r] = NewGroup(tr)
				}
				xs := randVectors(1, w, n)
				b.SetBytes(int64(4 * n))
				b.ResetTimer()
				for range b.N {
					var wg sync.WaitGroup
					errs := make([]error, w)
					for r := range w {
						wg.Go(func() { errs[r] = gs[r].AllReduce(context.Background(), xs[r], Mean, WireFloat32) })
					}
					wg.Wait()
					for r, err := range errs {
						if err != nil {
							b.Fatalf("rank %d: %v", r, err)
						}
					}
				}
			})
		}
	}
}
