package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Stager keeps one rank's snapshot generations: the local copy of each
// staged state (L0) and, when asked, its fragments sent to their holders
// (L1). Encoding and sending run on goroutines the Stager owns, so the
// training step is not held up by the network; the copy runs on the
// caller's goroutine (Stage) or on the Stager's too (StageAsync, waited
// for before the next optimizer step mutates the state). The outcome of
// a dispersal arrives on Results as a Report to forward to the
// coordinator (or an error: report the staging failed). A Stager
// outlives membership changes: its committed copy is what a surviving
// rank rolls back to; give it the new epoch's PeerService with
// SetPeerService.
//
// Memory, for a state shard of S bytes and code (k, m): every local
// generation is S plus, while it also has fragments, (m−1)/k·S of parity
// and padding kept in the same allocation; at most MaxGenerations
// generations are kept (the committed one and one newer), so about
// 2·(k+m−1)/k·S, plus the fragments held for others (Holder). Sending
// copies nothing: fragments travel from the staged buffer.
type Stager struct {
	job  string
	rank int
	svc  *PeerService // nil: local copies only

	mu          sync.Mutex
	local       map[int64][]byte // step -> state shard
	committed   int64            // last committed step (Free), -1: none
	outstanding int64            // step whose fragments are out and not settled, -1: none
	copied      chan error       // the copy StageAsync started; nil when none
	results     chan StageResult
	wg          sync.WaitGroup
	ctx         context.Context
	cancel      context.CancelFunc
}

// StageResult is the outcome of one peer dispersal.
type StageResult struct {
	Report Report
	Err    error
}

// ErrStageBusy is returned by Stage while a generation's fragments are
// outstanding; the caller skips this snapshot (training goes on).
var ErrStageBusy = errors.New("previous peer snapshot still outstanding")

// NewStager returns the stager of rank; svc may be nil for local copies
// only.
func NewStager(job string, rank int, svc *PeerService) *Stager {
	ctx, cancel := context.WithCancel(context.Background())
	return &Stager{job: job, rank: rank, svc: svc, local: map[int64][]byte{}, committed: -1, outstanding: -1, results: make(chan StageResult, 1), ctx: ctx, cancel: cancel}
}

// SetPeerService makes later dispersals use svc (a new epoch's); one in
// flight finishes, or fails, on the service it started with.
func (s *Stager) SetPeerService(svc *PeerService) {
	s.mu.Lock()
	s.svc = svc
	s.mu.Unlock()
}

// Results delivers the outcome of each peer dispersal.
func (s *Stager) Results() <-chan StageResult { return s.results }

// PeerTarget says where a generation's fragments go: the code, and the
// rank serving each fragment's holder (Holders[i] for fragment i).
type PeerTarget struct {
	Code    Code
	Holders []int
	Epoch   uint64
}

// Stage copies st into a new local generation, which replaces every
// other one but the committed generation. With peers non-nil it then
// encodes and sends the fragments in the background and delivers a
// StageResult. While a generation's fragments are outstanding (sent, not
// yet committed or abandoned: Free, Abandon) Stage stages nothing and
// returns ErrStageBusy, so at most MaxGenerations are kept: the committed
// one and one newer. Stage and StageAsync are called from one goroutine.
func (s *Stager) Stage(st *RankState, peers *PeerTarget) error {
	reserve, err := s.prepare(st, peers)
	if err != nil {
		return err
	}
	return s.install(st.Step, peers, reserve, st)
}

// StageAsync is Stage with the copy in the background too: it returns at
// once, and st's tensors are read until Wait returns, so the caller must
// not change them before calling Wait. A trainer calls it after an
// optimizer step and Wait before the next one, so the copy overlaps the
// next step's forward and backward passes, which only read the weights
// (the zero-overhead scheme of research fault-tolerance.md §3).
func (s *Stager) StageAsync(st *RankState, peers *PeerTarget) error {
	reserve, err := s.prepare(st, peers)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	s.mu.Lock()
	s.copied = done
	if peers != nil {
		s.outstanding = st.Step // no other stage starts until it settles
	}
	s.mu.Unlock()
	s.wg.Go(func() { done <- s.install(st.Step, peers, reserve, st) })
	return nil
}

// Wait blocks until the copy StageAsync started is done and returns its
// error; nil when none is in flight.
func (s *Stager) Wait() error {
	s.mu.Lock()
	done := s.copied
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	err := <-done
	s.mu.Lock()
	s.copied = nil
	s.mu.Unlock()
	return err
}

// prepare checks a stage may start and returns the capacity to reserve.
func (s *Stager) prepare(st *RankState, peers *PeerTarget) (int, error) {
	reserve := 0
	if peers != nil {
		if err := peers.Code.check(); err != nil {
			return 0, err
		}
		if len(peers.Holders) != peers.Code.Fragments() {
			return 0, fmt.Errorf("stage rank %d step %d: %d holders for %d fragments", s.rank, st.Step, len(peers.Holders), peers.Code.Fragments())
		}
		reserve = peers.Code.Reserve(estimateStateBytes(st))
	}
	s.mu.Lock()
	busy := s.outstanding >= 0 || s.copied != nil
	noSvc := peers != nil && s.svc == nil
	s.mu.Unlock()
	if noSvc {
		return 0, fmt.Errorf("stage rank %d step %d: no peer service to send fragments with", s.rank, st.Step)
	}
	if busy {
		return 0, ErrStageBusy
	}
	return reserve, nil
}

// install copies st and keeps it as the newest generation, then starts
// the dispersal when peers is set.
func (s *Stager) install(step int64, peers *PeerTarget, reserve int, st *RankState) error {
	buf, err := MarshalState(st, reserve)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.outstanding == step {
			s.outstanding = -1
		}
		return err
	}
	for old := range s.local {
		if old != s.committed {
			delete(s.local, old)
		}
	}
	s.local[step] = buf
	if peers == nil {
		return nil
	}
	s.outstanding = step
	target, svc := *peers, s.svc
	s.wg.Go(func() {
		r := StageResult{}
		r.Report, r.Err = s.disperse(svc, step, buf, target)
		s.results <- r
	})
	return nil
}

// estimateStateBytes is MarshalState's length to within the header's
// JSON, which the reserve need not cover exactly (Split copies only when
// the capacity is short).
func estimateStateBytes(st *RankState) int {
	n := len(stateMagic) + 8 + len(st.Meta) + 256
	for _, t := range st.Tensors {
		n += 4*len(t.Data) + len(t.Name) + 64 + 8*len(t.Shape)
	}
	return n
}

// disperse encodes a staged generation and sends every fragment to its
// holder at once.
func (s *Stager) disperse(svc *PeerService, step int64, buf []byte, p PeerTarget) (Report, error) {
	frags, err := Encode(s.job, step, s.rank, buf, p.Code)
	if err != nil {
		return Report{}, err
	}
	errs := make([]error, len(frags))
	var wg sync.WaitGroup
	for i := range frags {
		wg.Go(func() { errs[i] = svc.Put(s.ctx, p.Holders[i], &frags[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Report{}, fmt.Errorf("stage rank %d step %d: %w", s.rank, step, err)
	}
	r := Report{Rank: s.rank, Step: step, Epoch: p.Epoch, StateBytes: int64(len(buf)), StateCRC: frags[0].StateCRC}
	for _, f := range frags {
		r.FragmentCRCs = append(r.FragmentCRCs, f.CRC)
	}
	return r, nil
}

// Free records that committed is the committed step: older local
// generations are dropped, and a dispersal of it is settled.
func (s *Stager) Free(committed int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed = committed
	if s.outstanding == committed {
		s.outstanding = -1
	}
	for st := range s.local {
		if st < committed {
			delete(s.local, st)
		}
	}
}

// Abandon drops local generation step (it will never commit), settling
// its dispersal.
func (s *Stager) Abandon(step int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outstanding == step {
		s.outstanding = -1
	}
	delete(s.local, step)
}

// Local returns the local copy of step (to restore after a rollback).
func (s *Stager) Local(step int64) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.local[step]
	return b, ok
}

// Steps lists the local generations, ascending.
func (s *Stager) Steps() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stepsLocked()
}

func (s *Stager) stepsLocked() []int64 {
	var out []int64
	for st := range s.local {
		out = append(out, st)
	}
	slices.Sort(out)
	return out
}

// Close stops a dispersal in flight and waits for it; its result, if
// any, is dropped.
func (s *Stager) Close() {
	s.cancel()
	go func() {
		for range s.results {
		}
	}()
	s.wg.Wait()
	close(s.results)
}
