package comm

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
)

// smallParts is a part size that makes short payloads span several parts,
// so streams, forwarding and part numbering are exercised cheaply.
const smallParts = 16

// worldGroups returns, per rank, the group of all ranks with the given part
// size.
func worldGroups(t *testing.T, net []*MemTransport, part int) []*Group {
	t.Helper()
	all := make([]int, len(net))
	for r := range all {
		all[r] = r
	}
	m := subGroups(t, net, all, GroupOptions{MaxPartBytes: part})
	gs := make([]*Group, len(net))
	for r := range gs {
		gs[r] = m[r]
	}
	return gs
}

// netOptions are the networks collectives are run on: unbounded buffers,
// and one byte per link so that every Send waits for the receiver, as on a
// congested network.
var netOptions = []struct {
	name string
	opts MemOptions
}{
	{"unbounded", MemOptions{}},
	{"flowcontrol", MemOptions{LinkBufferBytes: 1}},
}

func TestAllGather(t *testing.T) {
	for _, no := range netOptions {
		for w := 1; w <= 5; w++ {
			t.Run(fmt.Sprintf("%s/W=%d", no.name, w), func(t *testing.T) {
				net := newNet(t, w, no.opts)
				gs := worldGroups(t, net, smallParts)
				// Sizes: empty, shorter than a part, exactly one part, and
				// several parts with and without a remainder.
				sizes := []int{0, 5, smallParts, 3 * smallParts, 50}[:w]
				payloads := make([][]byte, w)
				for r := range payloads {
					payloads[r] = randBytes(uint64(r), sizes[r])
				}
				got := make([][][]byte, w)
				mustRun(t, w, func(ctx context.Context, r int) (err error) {
					got[r], err = gs[r].AllGather(ctx, payloads[r])
					return err
				})
				total := 0
				for _, s := range sizes {
					total += s
				}
				for r := range got {
					if len(got[r]) != w {
						t.Fatalf("rank %d got %d payloads, want %d", r, len(got[r]), w)
					}
					for j := range got[r] {
						if !bytes.Equal(got[r][j], payloads[j]) {
							t.Fatalf("rank %d: payload of rank %d = %x, want %x", r, j, got[r][j], payloads[j])
						}
					}
					s := net[r].Stats()
					c := AllGatherCost(sizes, r, smallParts)
					want := Cost{}
					if w > 1 {
						want.SentBytes = int64(total - sizes[(r+1)%w])
						want.RecvBytes = int64(total - sizes[r])
						for j, sz := range sizes {
							if j != (r+1)%w {
								want.SentMsgs += int64(sz/smallParts + 1)
							}
							if j != r {
								want.RecvMsgs += int64(sz/smallParts + 1)
							}
						}
					}
					if c != want {
						t.Errorf("rank %d: AllGatherCost %+v, want %+v", r, c, want)
					}
					if s.Sent.Payload != want.SentBytes || s.Recv.Payload != want.RecvBytes ||
						s.Sent.Framing != want.SentMsgs*MemHeaderBytes || s.Recv.Framing != want.RecvMsgs*MemHeaderBytes {
						t.Errorf("rank %d: counters sent %+v recv %+v, want %+v", r, s.Sent, s.Recv, want)
					}
				}
			})
		}
	}
}

// TestAllGatherOwnership checks that the caller may reuse its payload and
// modify results once AllGather returns without affecting other ranks.
func TestAllGatherOwnership(t *testing.T) {
	const w = 3
	net := newNet(t, w, MemOptions{})
	gs := worldGroups(t, net, smallParts)
	payloads := [][]byte{randBytes(1, 40), randBytes(2, 7), randBytes(3, 33)}
	want := make([][]byte, w)
	for r := range payloads {
		want[r] = append([]byte(nil), payloads[r]...)
	}
	got := make([][][]byte, w)
	mustRun(t, w, func(ctx context.Context, r int) (err error) {
		got[r], err = gs[r].AllGather(ctx, payloads[r])
		if err != nil {
			return err
		}
		for j, p := range got[r] {
			if j != r {
				clear(p) // the caller owns the other ranks' blocks
			}
		}
		clear(payloads[r])
		return nil
	})
	mustRun(t, w, func(ctx context.Context, r int) (err error) {
		payloads[r] = append(payloads[r][:0], want[r]...)
		got[r], err = gs[r].AllGather(ctx, payloads[r])
		return err
	})
	for r := range got {
		for j := range got[r] {
			if !bytes.Equal(got[r][j], want[j]) {
				t.Fatalf("rank %d, block of rank %d changed", r, j)
			}
		}
	}
}

func TestBroadcast(t *testing.T) {
	for _, no := range netOptions {
		for w := 1; w <= 5; w++ {
			for _, n := range []int{0, 5, smallParts, 3*smallParts + 1} {
				t.Run(fmt.Sprintf("%s/W=%d/n=%d", no.name, w, n), func(t *testing.T) {
					net := newNet(t, w, no.opts)
					gs := worldGroups(t, net, smallParts)
					for root := range w {
						before := make([]Stats, w)
						for r := range net {
							before[r] = net[r].Stats()
						}
						want := randBytes(uint64(root), n)
						got := make([][]byte, w)
						mustRun(t, w, func(ctx context.Context, r int) (err error) {
							var p []byte
							if r == root {
								p = want
							}
							got[r], err = gs[r].Broadcast(ctx, root, p)
							return err
						})
						msgs := int64(n/smallParts + 1)
						for r := range w {
							if !bytes.Equal(got[r], want) {
								t.Fatalf("root %d: rank %d got %x, want %x", root, r, got[r], want)
							}
							d := net[r].Stats().Sub(before[r])
							pos := (r - root + w) % w
							var sent, recv Counter
							if pos < w-1 {
								sent = Counter{int64(n), msgs * MemHeaderBytes}
							}
							if pos > 0 {
								recv = Counter{int64(n), msgs * MemHeaderBytes}
							}
							if d.Sent != sent || d.Recv != recv {
								t.Errorf("root %d rank %d: sent %+v recv %+v, want %+v %+v", root, r, d.Sent, d.Recv, sent, recv)
							}
						}
					}
				})
			}
		}
	}
}

func TestBroadcastFloat32(t *testing.T) {
	const w, n, root = 4, 37, 2
	net := newNet(t, w, MemOptions{})
	gs := worldGroups(t, net, smallParts)
	xs := randVectors(3, w, n)
	want := append([]float32(nil), xs[root]...)
	mustRun(t, w, func(ctx context.Context, r int) error {
		return gs[r].BroadcastFloat32(ctx, root, xs[r])
	})
	for r := range xs {
		if i := firstBitDiff(xs[r], want); i >= 0 {
			t.Fatalf("rank %d value %d = %g, want %g", r, i, xs[r][i], want[i])
		}
	}
	// A member with a different length is told so.
	errs := runRanks(t, w, func(ctx context.Context, r int) error {
		return gs[r].BroadcastFloat32(ctx, root, make([]float32, n+r%2))
	})
	if errs[1] == nil || errs[3] == nil {
		t.Fatalf("length mismatch not reported: %v", errs)
	}
}

func TestReduce(t *testing.T) {
	for _, no := range netOptions {
		for w := 1; w <= 5; w++ {
			for _, n := range []int{0, 1, 7, 100} {
				for _, wire := range []Wire{WireFloat32, WireBF16} {
					t.Run(fmt.Sprintf("%s/W=%d/n=%d/%v", no.name, w, n, wire), func(t *testing.T) {
						net := newNet(t, w, no.opts)
						gs := worldGroups(t, net, smallParts)
						for root := range w {
							for _, op := range []Op{Sum, Mean} {
								xs := randVectors(uint64(root), w, n)
								got := clone32(xs)
								mustRun(t, w, func(ctx context.Context, r int) error {
									return gs[r].Reduce(ctx, root, got[r], op, wire)
								})
								checkReduce(t, xs, got, root, op, wire)
							}
						}
					})
				}
			}
		}
	}
}

// checkReduce checks root's result bit for bit against the chain order
// x[root+1] + ... + x[root-1] + x[root] (partial sums rounded to the wire
// before each hop), within the bound of checkAllReduce of the exact sum,
// and that the other ranks' vectors are unchanged.
func checkReduce(t *testing.T, xs, got [][]float32, root int, op Op, wire Wire) {
	t.Helper()
	w, n := len(xs), len(xs[0])
	round := func(v float32) float32 {
		if wire == WireBF16 {
			return float32FromBF16Rounding(v)
		}
		return v
	}
	rel := float64(w) * 0x1p-24
	if wire == WireBF16 {
		rel = float64(w) * (0x1p-8 + 0x1p-24)
	}
	for i := range n {
		acc := xs[(root+1)%w][i]
		for k := 2; k <= w; k++ {
			acc = xs[(root+k)%w][i] + round(acc)
		}
		if w > 1 && op == Mean {
			acc /= float32(w)
		}
		if math.Float32bits(got[root][i]) != math.Float32bits(acc) {
			t.Fatalf("root %d value %d = %g, chain-order reference %g", root, i, got[root][i], acc)
		}
		var exact, abs float64
		for r := range xs {
			exact += float64(xs[r][i])
			abs += math.Abs(float64(xs[r][i]))
		}
		if op == Mean {
			exact /= float64(w)
			abs /= float64(w)
		}
		if d := math.Abs(float64(acc) - exact); d > rel*abs {
			t.Fatalf("root %d value %d = %g, exact %g: error %g above %g", root, i, acc, exact, d, rel*abs)
		}
	}
	for r := range xs {
		if r != root {
			if i := firstBitDiff(got[r], xs[r]); i >= 0 {
				t.Fatalf("root %d: rank %d's x changed at %d", root, r, i)
			}
		}
	}
}

func TestBarrier(t *testing.T) {
	for w := 1; w <= 5; w++ {
		t.Run(fmt.Sprintf("W=%d", w), func(t *testing.T) {
			net := newNet(t, w, MemOptions{})
			gs := groups(net)
			// The last rank arrives only once all others wait in the
			// barrier; nobody may leave before everyone has arrived.
			var arrived atomic.Int32
			mustRun(t, w, func(ctx context.Context, r int) error {
				if r == w-1 {
					for q := 0; q < w-1; q++ {
						waitFor(t, fmt.Sprintf("rank %d to wait in the barrier", q), func() bool { return net[q].blocked() > 0 })
					}
				}
				arrived.Add(1)
				if err := gs[r].Barrier(ctx); err != nil {
					return err
				}
				if a := arrived.Load(); a != int32(w) {
					return fmt.Errorf("left the barrier when %d of %d had arrived", a, w)
				}
				return nil
			})
			rounds := int64(0)
			for d := 1; d < w; d *= 2 {
				rounds++
			}
			for r, tr := range net {
				s := tr.Stats()
				want := Counter{0, rounds * MemHeaderBytes}
				if s.Sent != want || s.Recv != want || s.SentByKind[KindBarrier] != want {
					t.Errorf("rank %d: sent %+v recv %+v, want %+v each", r, s.Sent, s.Recv, want)
				}
			}
		})
	}
}

func TestP2P(t *testing.T) {
	const w = 3
	net := newNet(t, w, MemOptions{LinkBufferBytes: 64})
	gs := worldGroups(t, net, smallParts)
	big := randBytes(7, 5*smallParts+3)
	mustRun(t, w, func(ctx context.Context, r int) error {
		g := gs[r]
		switch r {
		case 0:
			// Ids are independent of each other and of collectives: send
			// 1 then 2, then run an all-reduce while 1 is still unread.
			if err := g.Send(ctx, 1, 1, []byte("first")); err != nil {
				return err
			}
			if err := g.Send(ctx, 1, 2, big); err != nil {
				return err
			}
			if err := g.AllReduce(ctx, make([]float32, 10), Sum, WireFloat32); err != nil {
				return err
			}
			got, err := g.Recv(ctx, 2, 1)
			if err != nil {
				return err
			}
			if len(got) != 0 {
				return fmt.Errorf("empty message arrived as %q", got)
			}
		case 1:
			// Receive 2 before 1, and 1 after the all-reduce.
			got, err := g.Recv(ctx, 0, 2)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, big) {
				return fmt.Errorf("message 2 = %x, want %x", got, big)
			}
			if err := g.AllReduce(ctx, make([]float32, 10), Sum, WireFloat32); err != nil {
				return err
			}
			if got, err = g.Recv(ctx, 0, 1); err != nil {
				return err
			}
			if string(got) != "first" {
				return fmt.Errorf("message 1 = %q", got)
			}
		case 2:
			if err := g.AllReduce(ctx, make([]float32, 10), Sum, WireFloat32); err != nil {
				return err
			}
			return g.Send(ctx, 0, 1, nil)
		}
		return nil
	})
	s := net[0].Stats()
	want := Counter{int64(len("first") + len(big)), (1 + int64(len(big)/smallParts+1)) * MemHeaderBytes}
	if s.SentByKind[KindP2P] != want {
		t.Errorf("rank 0 p2p sent %+v, want %+v", s.SentByKind[KindP2P], want)
	}

	ctx := testCtx(t)
	if err := gs[0].Send(ctx, 3, 0, nil); err == nil {
		t.Error("send to group rank 3 of 3 accepted")
	}
	if _, err := gs[0].Recv(ctx, 1, MaxP2PID+1); err == nil {
		t.Error("id above MaxP2PID accepted")
	}
}

func TestSubGroupRejected(t *testing.T) {
	net := newNet(t, 4, MemOptions{})
	for _, tc := range []struct {
		name  string
		ranks []int
		opts  GroupOptions
	}{
		{"empty", nil, GroupOptions{}},
		{"outside world", []int{0, 4}, GroupOptions{}},
		{"negative", []int{0, -1}, GroupOptions{}},
		{"duplicate", []int{0, 1, 1}, GroupOptions{}},
		{"not a member", []int{1, 2}, GroupOptions{}},
		{"id too large", []int{0, 1}, GroupOptions{ID: MaxGroupID + 1}},
		{"part too small", []int{0, 1}, GroupOptions{MaxPartBytes: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewSubGroup(net[0], tc.ranks, tc.opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestGroupIDs(t *testing.T) {
	net := newNet(t, 4, MemOptions{})
	ids := map[uint32][]int{}
	for _, ranks := range [][]int{{0, 1, 2, 3}, {0, 1}, {0, 2}, {0, 3}, {0, 1, 2}, {3, 2, 1, 0}, {1, 0}} {
		g, err := NewSubGroup(net[0], ranks, GroupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := ids[g.ID()]; ok {
			t.Fatalf("groups %v and %v share id %d", prev, ranks, g.ID())
		}
		ids[g.ID()] = ranks
	}
	if g, _ := NewSubGroup(net[0], []int{0, 1, 2, 3}, GroupOptions{}); g.ID() != NewGroup(net[0]).ID() {
		t.Fatal("the world in rank order should have the world group's id")
	}
}

// TestSubGroupsConcurrent runs a 2x2 topology: data-parallel groups {0,2}
// and {1,3}, pipeline groups {0,1} and {2,3}, and the world group, all at
// the same time on each rank, with the same tags in every group.
func TestSubGroupsConcurrent(t *testing.T) {
	const w, n = 4, 999
	net := newNet(t, w, MemOptions{LinkBufferBytes: 4096})
	world := groups(net)
	sets := [][]int{{0, 2}, {1, 3}, {0, 1}, {2, 3}}
	sub := make([]map[int]*Group, len(sets))
	for i, ranks := range sets {
		sub[i] = subGroups(t, net, ranks, GroupOptions{})
	}
	xs := randVectors(5, w, n)
	worldX := clone32(xs)
	subX := make([]map[int][]float32, len(sets))
	for i := range sets {
		subX[i] = map[int][]float32{}
		for _, r := range sets[i] {
			subX[i][r] = append([]float32(nil), xs[r]...)
		}
	}
	mustRun(t, w, func(ctx context.Context, r int) error {
		errs := make(chan error, len(sets)+1)
		go func() { errs <- world[r].AllReduce(ctx, worldX[r], Sum, WireFloat32) }()
		running := 1
		for i := range sets {
			if g, ok := sub[i][r]; ok {
				running++
				go func() { errs <- g.AllReduce(ctx, subX[i][r], Mean, WireFloat32) }()
			}
		}
		var first error
		for range running {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	})
	checkAllReduce(t, xs, worldX, Sum, WireFloat32)
	for i, ranks := range sets {
		in := [][]float32{xs[ranks[0]], xs[ranks[1]]}
		checkAllReduce(t, in, [][]float32{subX[i][ranks[0]], subX[i][ranks[1]]}, Mean, WireFloat32)
	}
}

// float32FromBF16Rounding rounds v to bf16 and back.
func float32FromBF16Rounding(v float32) float32 {
	x := []float32{v}
	roundBF16(x)
	return x[0]
}
