package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/comm"
)

// grpcRanks connects world ranks over real gRPC on loopback in epoch.
func grpcRanks(t testing.TB, world int, epoch uint64) []*comm.GRPCTransport {
	t.Helper()
	trs := make([]*comm.GRPCTransport, world)
	addrs := make([]string, world)
	for r := range world {
		tr, err := comm.ListenGRPC(comm.GRPCOptions{JobID: "snap", Rank: r, World: world, Token: "snapshot-test-token-0123456789", Epoch: epoch, TLS: comm.TLSOff})
		if err != nil {
			t.Fatal(err)
		}
		trs[r], addrs[r] = tr, tr.Addr()
		t.Cleanup(func() { tr.Close() })
	}
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r, tr := range trs {
		wg.Go(func() { errs[r] = tr.Connect(context.Background(), addrs) })
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	return trs
}

// flatPlacement places world ranks, one per worker w0..w{world-1}.
func flatPlacement(t testing.TB, world, m, k int) (*Placement, []string) {
	in := PlacementInput{Tolerate: m, DataShards: k}
	for r := range world {
		id := fmt.Sprint("w", r)
		in.RankWorker = append(in.RankWorker, id)
		in.Workers = append(in.Workers, PlacementWorker{ID: id})
	}
	p, err := Place(in)
	if err != nil {
		t.Fatal(err)
	}
	return p, in.RankWorker
}

func target(p *Placement, rankWorker []string, rank int, epoch uint64) *PeerTarget {
	pt := &PeerTarget{Code: p.Code, Epoch: epoch}
	for _, w := range p.Holders[rank] {
		pt.Holders = append(pt.Holders, ServingRank(rankWorker, w))
	}
	return pt
}

// stageAll stages every rank's state of step with its peers, runs the
// commit protocol on the reports, and frees older generations everywhere,
// as the coordinator and workers will.
func stageAll(t testing.TB, tr *Tracker, p *Placement, rankWorker []string, stagers []*Stager, holders []*Holder, states []*RankState, epoch uint64) *PeerManifest {
	t.Helper()
	for r, s := range stagers {
		if err := s.Stage(states[r], target(p, rankWorker, r, epoch)); err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	var m *PeerManifest
	for r, s := range stagers {
		res := <-s.Results()
		if res.Err != nil {
			t.Fatalf("rank %d: %v", r, res.Err)
		}
		acts, err := tr.Report(res.Report)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range acts {
			if a.Kind == Propose {
				m = a.Manifest
			}
		}
	}
	if m == nil {
		t.Fatal("no manifest proposed after every rank reported")
	}
	// The manifest goes to the store and comes back as bytes.
	b, err := MarshalPeerManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = UnmarshalPeerManifest(b); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Persisted(m.Step); err != nil {
		t.Fatal(err)
	}
	for r := range stagers {
		stagers[r].Free(m.Step)
		holders[r].Free(m.Step)
	}
	return m
}

// Four ranks over real gRPC stage their states to each other; one rank's
// process is lost with everything it held, the survivors move to a new
// epoch, and the replacement rebuilds its state from its peers' fragments,
// bit for bit, also with a second holder gone or a fragment corrupt; with
// one holder more gone than the code tolerates it gets ErrUnrecoverable.
func TestRestoreFromPeersOverGRPC(t *testing.T) {
	const world, lost = 4, 2
	p, rankWorker := flatPlacement(t, world, 2, 0) // k=2, m=2: 3 fragments on 3 other workers
	trs := grpcRanks(t, world, 1)
	holders := make([]*Holder, world)
	svcs := make([]*PeerService, world)
	stagers := make([]*Stager, world)
	states := make([]*RankState, world)
	for r := range world {
		holders[r] = NewHolder()
		svcs[r] = StartPeerService(trs[r], holders[r])
		stagers[r] = NewStager("demo", r, svcs[r])
		states[r] = testRankState(uint64(r), 3000, 5, 20000)
		states[r].Rank = r
	}
	tr, err := NewTracker("demo", p, 1, -1)
	if err != nil {
		t.Fatal(err)
	}
	m := stageAll(t, tr, p, rankWorker, stagers, holders, states, 1)
	// A second generation replaces the first after it commits.
	for r := range states {
		states[r].Step = 50
	}
	m = stageAll(t, tr, p, rankWorker, stagers, holders, states, 1)
	for r, h := range holders {
		for o := range world {
			if o == r {
				continue
			}
			if got := h.Steps(o); len(got) > 1 || (len(got) == 1 && got[0] != 50) {
				t.Fatalf("rank %d holds steps %v of rank %d after step 50 committed", r, got, o)
			}
		}
	}

	// Rank 2's process dies: its state, its local copy and the fragments
	// it held for others are gone, and its transport with it.
	for r := range world {
		svcs[r].Close()
		trs[r].Close()
	}
	stagers[lost].Close()
	acts, err := tr.Lost(2, lost)
	if err != nil || len(acts) != 1 || acts[0].Kind != Rollback || acts[0].Step != 50 {
		t.Fatalf("lost: %v %v", acts, err)
	}
	holders[lost] = NewHolder()
	trs = grpcRanks(t, world, 2)
	for r := range world {
		svcs[r] = StartPeerService(trs[r], holders[r])
	}
	// The survivors roll back to their local copy of the committed step.
	for r, s := range stagers {
		if r == lost {
			continue
		}
		defer s.Close()
		s.SetPeerService(svcs[r])
		b, ok := s.Local(50)
		if !ok {
			t.Fatalf("survivor %d has no local copy of committed step 50 (has %v)", r, s.Steps())
		}
		st, err := UnmarshalState(b)
		if err != nil {
			t.Fatal(err)
		}
		sameState(t, st, states[r])
	}
	defer func() {
		for _, s := range svcs {
			s.Close()
		}
	}()
	want, err := MarshalState(states[lost], 0)
	if err != nil {
		t.Fatal(err)
	}
	restore := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return svcs[lost].Restore(ctx, m, lost, func(w string) int { return ServingRank(rankWorker, w) })
	}
	check := func(what string) {
		got, err := restore()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if string(got) != string(want) {
			t.Fatalf("%s: restored state differs", what)
		}
		st, err := UnmarshalState(got)
		if err != nil {
			t.Fatal(err)
		}
		sameState(t, st, states[lost])
	}
	check("all holders alive")

	holderRank := func(i int) int { return ServingRank(rankWorker, m.HolderOf(lost, i)) }
	// Corrupt the first data fragment in its holder's memory: its hash
	// gives it away and another holder's fragment is used.
	f0, err := holders[holderRank(0)].Get(lost, 50, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := *f0
	bad.Data = append([]byte(nil), f0.Data...)
	bad.Data[100] ^= 0xff
	holders[holderRank(0)].held[heldKey{lost, 50, 0}] = &bad
	check("fragment 0 corrupt")

	// A second worker is lost (m = 2 in all, with rank 2's own); the
	// corruption is repaired first, since it would count as a third loss.
	holders[holderRank(0)].held[heldKey{lost, 50, 0}] = f0
	holders[holderRank(1)].Free(1 << 40)
	check("fragment 1's holder lost")

	// One more than tolerated: only one good fragment is left.
	holders[holderRank(2)].Free(1 << 40)
	_, err = restore()
	var ue *UnrecoverableError
	if !errors.Is(err, ErrUnrecoverable) || !errors.As(err, &ue) || ue.Have != 1 || ue.Need != 2 {
		t.Fatalf("three of three fragments unusable: %v", err)
	}
	t.Log(err)
}

func TestHolderGenerations(t *testing.T) {
	_, frags, _ := encodeTest(t, Code{K: 2, M: 1}, 100)
	h := NewHolder()
	put := func(step int64) error {
		f := frags[0]
		f.Step = step
		return h.Put(&f)
	}
	for _, s := range []int64{10, 20} {
		if err := put(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := put(30); !errors.Is(err, ErrGenerationsFull) {
		t.Fatalf("third generation: %v", err)
	}
	h.Abandon(20)
	if err := put(30); err != nil {
		t.Fatal(err)
	}
	h.Free(30)
	if got := h.Steps(frags[0].Rank); len(got) != 1 || got[0] != 30 {
		t.Fatalf("after free 30: %v", got)
	}
	if h.Bytes() != int64(len(frags[0].Data)) {
		t.Fatalf("bytes %d, want %d", h.Bytes(), len(frags[0].Data))
	}
	corrupt := frags[1]
	corrupt.Data = append([]byte(nil), corrupt.Data...)
	corrupt.Data[0] ^= 1
	if err := h.Put(&corrupt); err == nil {
		t.Fatal("corrupt fragment held")
	}
}

// While a generation is outstanding the stager stages nothing more, and
// keeps the committed generation besides the newest.
func TestStagerGenerations(t *testing.T) {
	trs, err := comm.NewMemNetwork(3, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var svcs []*PeerService
	for _, tr := range trs {
		svcs = append(svcs, StartPeerService(tr, NewHolder()))
	}
	defer func() {
		for _, s := range svcs {
			s.Close()
		}
	}()
	s := NewStager("demo", 0, svcs[0])
	defer s.Close()
	st := testRankState(1, 100)
	st.Rank = 0
	pt := &PeerTarget{Code: Code{K: 2, M: 1}, Holders: []int{1, 2}, Epoch: 0}
	st.Step = 10
	if err := s.Stage(st, pt); err != nil {
		t.Fatal(err)
	}
	st.Step = 11
	if err := s.Stage(st, nil); !errors.Is(err, ErrStageBusy) {
		t.Fatalf("stage while outstanding: %v", err)
	}
	if res := <-s.Results(); res.Err != nil || res.Report.Step != 10 || len(res.Report.FragmentCRCs) != 2 {
		t.Fatalf("result %+v", res)
	}
	s.Free(10)
	for _, step := range []int64{11, 12, 13} {
		st.Step = step
		if err := s.Stage(st, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Steps(); len(got) != 2 || got[0] != 10 || got[1] != 13 {
		t.Fatalf("local generations %v, want [10 13]", got)
	}
	if b, ok := s.Local(10); !ok {
		t.Fatal("committed generation dropped")
	} else if back, err := UnmarshalState(b); err != nil || back.Step != 10 {
		t.Fatalf("local copy of 10: %v", err)
	}
}

// A holder that is gone while a rank disperses makes the staging fail;
// the rank reports it, the tracker abandons the step everywhere, and the
// next peer snapshot goes through once the holder is back in a new epoch.
func TestStageFailsWhenHolderGone(t *testing.T) {
	const world = 3
	p, rankWorker := flatPlacement(t, world, 1, 2) // k=2, m=1: both other ranks hold a fragment
	trs, err := comm.NewMemNetwork(world, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	holders := []*Holder{NewHolder(), NewHolder(), NewHolder()}
	var svcs []*PeerService
	for r, tr := range trs {
		svcs = append(svcs, StartPeerService(tr, holders[r]))
	}
	stager := NewStager("demo", 0, svcs[0])
	defer stager.Close()
	tr, err := NewTracker("demo", p, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	st := testRankState(4, 1000)
	st.Rank, st.Step = 0, 10
	// Rank 2's process dies before rank 0 sends it a fragment.
	svcs[2].Close()
	trs[2].Close()
	if err := stager.Stage(st, target(p, rankWorker, 0, 0)); err != nil {
		t.Fatal(err)
	}
	res := <-stager.Results()
	var pe *comm.PeerError
	if res.Err == nil || !errors.As(res.Err, &pe) || pe.Rank != 2 {
		t.Fatalf("dispersal to a dead holder: %v, want a PeerError of rank 2", res.Err)
	}
	acts, err := tr.StageFailed(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	// The abandon reaches the rank and every holder, which may have got
	// some of the fragments.
	if len(acts) != 1 || acts[0].Kind != Abandon || acts[0].Step != 10 {
		t.Fatalf("stage failure: %v, want abandon 10", acts)
	}
	stager.Abandon(10)
	holders[1].Abandon(10)
	if got := holders[1].Steps(0); len(got) != 0 {
		t.Fatalf("holder 1 keeps steps %v of an abandoned dispersal", got)
	}
	if _, ok := stager.Local(10); ok {
		t.Fatal("the abandoned generation is still kept locally")
	}
	// New epoch, rank 2 replaced: the next snapshot goes through.
	for _, s := range svcs[:2] {
		s.Close()
	}
	trs, err = comm.NewMemNetwork(world, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	holders[2] = NewHolder()
	svcs = svcs[:0]
	for r, tr := range trs {
		svcs = append(svcs, StartPeerService(tr, holders[r]))
	}
	defer func() {
		for _, s := range svcs {
			s.Close()
		}
	}()
	stager.SetPeerService(svcs[0])
	st.Step = 20
	if err := stager.Stage(st, target(p, rankWorker, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if res := <-stager.Results(); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, h := range holders[1:] {
		if got := h.Steps(0); len(got) != 1 || got[0] != 20 {
			t.Fatalf("holder keeps %v, want [20]", got)
		}
	}
}
