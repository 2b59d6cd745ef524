package comm

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/tensor"
)

// allReduceSizes are the vector lengths of the all-reduce tests for w ranks:
// empty, fewer values than ranks, odd sizes, and one that needs several
// 1 MiB parts per ring segment.
func allReduceSizes(w int, short bool) []int {
	sizes := []int{0, 1, 7, w - 1, 1000}
	if !short {
		sizes = append(sizes, 1<<20+3)
	}
	return sizes
}

// runAllReduce all-reduces copies of xs on a fresh network and returns
// every rank's result and stats.
func runAllReduce(t *testing.T, xs [][]float32, op Op, wire Wire, opts MemOptions) ([][]float32, []Stats) {
	t.Helper()
	w := len(xs)
	net := newNet(t, w, opts)
	gs := groups(net)
	got := clone32(xs)
	mustRun(t, w, func(ctx context.Context, r int) error {
		return gs[r].AllReduce(ctx, got[r], op, wire)
	})
	stats := make([]Stats, w)
	for r := range net {
		stats[r] = net[r].Stats()
	}
	return got, stats
}

// ringOrderReference computes, sequentially, what the ring must produce:
// segment j summed in the order x[j], x[j+1], ..., x[j-1], every partial
// sum but the last rounded to the wire, Mean's division, and the final
// rounding to the wire. AllReduce must match it bit for bit.
func ringOrderReference(xs [][]float32, op Op, wire Wire) []float32 {
	w, n := len(xs), len(xs[0])
	out := append([]float32(nil), xs[0]...)
	if w == 1 {
		return out
	}
	round := func(v float32) float32 {
		if wire == WireBF16 {
			return tensor.ToBF16(v).Float32()
		}
		return v
	}
	off := segments(n, w)
	for j := 0; j < w; j++ {
		for i := off[j]; i < off[j+1]; i++ {
			acc := round(xs[j][i])
			for k := 1; k < w; k++ {
				acc = xs[(j+k)%w][i] + acc
				if k < w-1 {
					acc = round(acc)
				}
			}
			if op == Mean {
				acc /= float32(w)
			}
			out[i] = round(acc)
		}
	}
	return out
}

func TestAllReduce(t *testing.T) {
	for w := 1; w <= 5; w++ {
		for _, n := range allReduceSizes(w, testing.Short()) {
			for _, op := range []Op{Sum, Mean} {
				for _, wire := range []Wire{WireFloat32, WireBF16} {
					if n > 1<<20 && (op == Sum) != (wire == WireFloat32) {
						continue // the large size once per op and per wire is enough
					}
					t.Run(fmt.Sprintf("W=%d/n=%d/%v/%v", w, n, op, wire), func(t *testing.T) {
						xs := randVectors(1, w, n)
						got, _ := runAllReduce(t, xs, op, wire, MemOptions{})
						checkAllReduce(t, xs, got, op, wire)

						// Again on one OS thread and with every Send
						// waiting for its receiver: same bits.
						prev := runtime.GOMAXPROCS(1)
						again, _ := runAllReduce(t, xs, op, wire, MemOptions{LinkBufferBytes: 1})
						runtime.GOMAXPROCS(prev)
						for r := range again {
							if i := firstBitDiff(got[r], again[r]); i >= 0 {
								t.Fatalf("rank %d value %d: %g in one run, %g in another", r, i, got[r][i], again[r][i])
							}
						}
					})
				}
			}
		}
	}
}

// checkAllReduce checks every rank's result: bitwise equal on all ranks,
// bitwise equal to the ring-order reference, and within the stated bound of
// the exact (float64) reduction.
//
// Bound: every partial sum is at most S = Σ_r |x_r[i]| in magnitude (S/W
// after Mean's division). With float32's unit roundoff u = 2^-24, the W-1
// additions each err by at most u·S and Mean's division by u·S/W, so
// |got - exact| ≤ W·u·S (with S divided by W for Mean). With WireBF16 there
// are W roundings to bf16 on top (the W-1 hops and the final one), each
// erring by at most bf16's unit roundoff 2^-8 (8 significant bits) of a
// value bounded by S, giving W·(2^-8 + u)·S.
func checkAllReduce(t *testing.T, xs, got [][]float32, op Op, wire Wire) {
	t.Helper()
	w := len(xs)
	want := ringOrderReference(xs, op, wire)
	rel := float64(w) * 0x1p-24
	if wire == WireBF16 && w > 1 {
		rel = float64(w) * (0x1p-8 + 0x1p-24)
	}
	for r := range got {
		if i := firstBitDiff(got[r], want); i >= 0 {
			t.Fatalf("rank %d value %d = %g, ring-order reference %g (bits differ)", r, i, got[r][i], want[i])
		}
	}
	for i := range want {
		var exact, abs float64
		for r := range xs {
			exact += float64(xs[r][i])
			abs += math.Abs(float64(xs[r][i]))
		}
		if op == Mean {
			exact /= float64(w)
			abs /= float64(w)
		}
		if d := math.Abs(float64(want[i]) - exact); d > rel*abs {
			t.Fatalf("value %d = %g, exact %g: error %g above the bound %g", i, want[i], exact, d, rel*abs)
		}
		if wire == WireBF16 && w > 1 && math.Float32bits(want[i])&0xffff != 0 {
			t.Fatalf("value %d = %g is not a bf16 value", i, want[i])
		}
	}
}

// firstBitDiff returns the first index where a and b differ in bits, or -1.
func firstBitDiff(a, b []float32) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestAllReduceBytes checks each rank's counters against the closed form:
// rank r sends every segment but r+1 in reduce-scatter and every segment but
// r+2 in all-gather, and receives every segment but r, then every one but
// r+1 (segments mod W); framing is MemHeaderBytes per part.
func TestAllReduceBytes(t *testing.T) {
	for _, tc := range []struct {
		w, n, part int
		wire       Wire
	}{
		{2, 10, 0, WireFloat32},
		{3, 1000, 0, WireBF16},
		{4, 1001, 64, WireFloat32},
		{5, 3, 0, WireFloat32},
		{5, 4099, 100, WireBF16},
	} {
		t.Run(fmt.Sprintf("W=%d/n=%d/part=%d/%v", tc.w, tc.n, tc.part, tc.wire), func(t *testing.T) {
			net := newNet(t, tc.w, MemOptions{LinkBufferBytes: 1})
			all := make([]int, tc.w)
			for r := range all {
				all[r] = r
			}
			gs := subGroups(t, net, all, GroupOptions{MaxPartBytes: tc.part})
			xs := randVectors(2, tc.w, tc.n)
			mustRun(t, tc.w, func(ctx context.Context, r int) error {
				return gs[r].AllReduce(ctx, xs[r], Sum, tc.wire)
			})
			seg := make([]int, tc.w)
			for j := range seg {
				seg[j] = tc.n / tc.w
				if j < tc.n%tc.w {
					seg[j]++
				}
			}
			part := tc.part
			if part == 0 {
				part = DefaultMaxPartBytes
			}
			per := part / tc.wire.Bytes()
			msgs := func(j int) int64 { return int64((seg[j%tc.w] + per - 1) / per) }
			b := int64(tc.wire.Bytes())
			for r, tr := range net {
				var sentMsgs, recvMsgs int64
				for j := range tc.w {
					if j != (r+1)%tc.w {
						sentMsgs += msgs(j)
						recvMsgs += msgs(j)
					}
					if j != (r+2)%tc.w {
						sentMsgs += msgs(j)
					}
					if j != r {
						recvMsgs += msgs(j)
					}
				}
				wantSent := Counter{
					Payload: int64(2*tc.n-seg[(r+1)%tc.w]-seg[(r+2)%tc.w]) * b,
					Framing: sentMsgs * MemHeaderBytes,
				}
				wantRecv := Counter{
					Payload: int64(2*tc.n-seg[r]-seg[(r+1)%tc.w]) * b,
					Framing: recvMsgs * MemHeaderBytes,
				}
				s := tr.Stats()
				if s.Sent != wantSent || s.SentByKind[KindAllReduce] != wantSent {
					t.Errorf("rank %d sent %+v, want %+v", r, s.Sent, wantSent)
				}
				if s.Recv != wantRecv || s.RecvByKind[KindAllReduce] != wantRecv {
					t.Errorf("rank %d received %+v, want %+v", r, s.Recv, wantRecv)
				}
				c := AllReduceCost(tc.n, tc.w, r, tc.wire, tc.part)
				if c.SentBytes != wantSent.Payload || c.RecvBytes != wantRecv.Payload || c.SentMsgs != sentMsgs || c.RecvMsgs != recvMsgs {
					t.Errorf("rank %d: AllReduceCost %+v disagrees with the counters", r, c)
				}
			}
		})
	}
}

func TestAllReduceRejectsBadArguments(t *testing.T) {
	net := newNet(t, 1, MemOptions{})
	g := NewGroup(net[0])
	ctx := testCtx(t)
	if err := g.AllReduce(ctx, nil, Op(7), WireFloat32); err == nil {
		t.Error("unknown op accepted")
	}
	if err := g.AllReduce(ctx, nil, Sum, Wire(7)); err == nil {
		t.Error("unknown wire accepted")
	}
}

// TestAllReduceLengthMismatch checks that members passing different lengths
// get an error naming the problem rather than corrupt results.
func TestAllReduceLengthMismatch(t *testing.T) {
	// The rank that sees the mismatch stops; the other may then wait for a
	// message that never comes, as it would on a network, until the
	// timeout.
	net := newNet(t, 2, MemOptions{Timeout: 200 * time.Millisecond})
	gs := groups(net)
	errs := runRanks(t, 2, func(ctx context.Context, r int) error {
		return gs[r].AllReduce(ctx, make([]float32, 10+2*r), Sum, WireFloat32)
	})
	if errs[0] == nil || errs[1] == nil {
		t.Fatalf("lengths 10 and 12 accepted: %v", errs)
	}
	found := false
	for _, err := range errs {
		found = found || strings.Contains(err.Error(), "same length")
	}
	if !found {
		t.Fatalf("no error names the length mismatch: %v", errs)
	}
}
