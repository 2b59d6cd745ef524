package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ternml/tern/pkg/comm"
)

// MaxGenerations is how many generations of one owner's fragments a
// Holder keeps: the committed one and one newer (research fault-tolerance
// §8.4). A Put beyond it is refused rather than dropping a generation
// that may be the committed one; the owner reports the staging failed and
// the tracker abandons that step.
const MaxGenerations = 2

// ErrGenerationsFull is wrapped by Holder.Put when the owner already has
// MaxGenerations generations held.
var ErrGenerationsFull = errors.New("snapshot holder already keeps the maximum generations for this owner")

// ErrNotHeld is returned when a requested fragment is not held.
var ErrNotHeld = errors.New("fragment not held")

// Holder keeps, in memory, the fragments this worker holds for other
// ranks: per owner rank at most MaxGenerations steps. It outlives a
// transport (a membership change builds a new PeerService around the same
// Holder). Safe for concurrent use.
//
// Memory: for each owner, every generation kept costs one fragment,
// S/k (S the owner's state shard); with two generations and the balanced
// placement a worker holds about 2·(k+m−1)/k·S̄ per rank it runs (S̄ the
// mean state size), e.g. 2.25·S̄ for k=8 m=2.
type Holder struct {
	mu    sync.Mutex
	held  map[heldKey]*Fragment
	steps map[int][]int64 // owner -> steps held, ascending
	bytes int64
}

type heldKey struct {
	owner int
	step  int64
	index int
}

// NewHolder returns an empty holder.
func NewHolder() *Holder {
	return &Holder{held: map[heldKey]*Fragment{}, steps: map[int][]int64{}}
}

// Put stores a verified fragment. Storing the same fragment again
// replaces it.
func (h *Holder) Put(f *Fragment) error {
	if err := f.Verify(); err != nil {
		return fmt.Errorf("hold fragment of rank %d step %d: %w", f.Rank, f.Step, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	steps := h.steps[f.Rank]
	if !slices.Contains(steps, f.Step) {
		if len(steps) >= MaxGenerations {
			return fmt.Errorf("hold fragment of rank %d step %d: steps %v are held (free or abandon one first): %w", f.Rank, f.Step, steps, ErrGenerationsFull)
		}
		steps = append(steps, f.Step)
		slices.Sort(steps)
		h.steps[f.Rank] = steps
	}
	k := heldKey{f.Rank, f.Step, f.Index}
	if old := h.held[k]; old != nil {
		h.bytes -= int64(len(old.Data))
	}
	h.held[k] = f
	h.bytes += int64(len(f.Data))
	return nil
}

// Get returns the held fragment, or ErrNotHeld.
func (h *Holder) Get(owner int, step int64, index int) (*Fragment, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f := h.held[heldKey{owner, step, index}]; f != nil {
		return f, nil
	}
	return nil, fmt.Errorf("fragment %d of rank %d step %d: %w", index, owner, step, ErrNotHeld)
}

// Free drops every generation older than the committed step, of every
// owner.
func (h *Holder) Free(committed int64) { h.drop(func(s int64) bool { return s < committed }) }

// AbandonAfter drops every generation newer than step, of every owner:
// after a rollback to committed step, nothing newer will ever commit.
func (h *Holder) AbandonAfter(step int64) { h.drop(func(s int64) bool { return s > step }) }

// Abandon drops generation step of every owner (it will never commit).
func (h *Holder) Abandon(step int64) { h.drop(func(s int64) bool { return s == step }) }

func (h *Holder) drop(match func(int64) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, f := range h.held {
		if match(k.step) {
			h.bytes -= int64(len(f.Data))
			delete(h.held, k)
		}
	}
	for o, steps := range h.steps {
		steps = slices.DeleteFunc(steps, match)
		if len(steps) == 0 {
			delete(h.steps, o)
		} else {
			h.steps[o] = steps
		}
	}
}

// Bytes is the fragment data held now.
func (h *Holder) Bytes() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bytes
}

// Steps lists the steps held for owner, ascending.
func (h *Holder) Steps(owner int) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.steps[owner])
}

// Wire protocol of the peer fragment service, on comm.KindSnapshot tags.
// Rank a's n-th request to rank b (n counted per ordered pair, from 0 in
// each epoch) travels as parts Tag{KindSnapshot, n, 0..P-1}; b answers on
// Tag{KindSnapshot, n|respBit, 0..Q-1}. Part 0 of either is a small head:
// op or status (1 byte), the number of parts after it (u32), then the
// fragment header (put request, found response), the fragment's address
// (get request), or a message (refusal). The other parts are the fragment
// data in chunks of at most chunkBytes, sent from the fragment's own
// memory without copying.
const (
	respBit    = 1 << 63
	chunkBytes = comm.DefaultMaxPartBytes
	// maxParts bounds the parts a request may announce: 4 GiB fragments.
	maxParts = 4 << 10

	opPut      = 1
	opGet      = 2
	statusOK   = 0
	statusFail = 1
	statusMiss = 2
)

// PeerService serves a Holder's fragments to the other ranks of one
// transport epoch, and sends and fetches fragments for this rank. A
// membership change (a new epoch) ends it; start a new one around the same
// Holder. One goroutine per peer serves requests; Close stops and waits
// for them.
type PeerService struct {
	tr     comm.Transport
	h      *Holder
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	next   []atomic.Uint64 // per peer: number of this rank's requests to it
}

// StartPeerService starts serving h to every other rank of tr, in tr's
// current epoch.
func StartPeerService(tr comm.Transport, h *Holder) *PeerService {
	ctx, cancel := context.WithCancel(comm.WithEpoch(context.Background(), tr.Epoch()))
	s := &PeerService{tr: tr, h: h, ctx: ctx, cancel: cancel, next: make([]atomic.Uint64, tr.World())}
	for p := range tr.World() {
		if p != tr.Rank() {
			s.wg.Go(func() { s.serve(p) })
		}
	}
	return s
}

// Close stops serving and waits for the serving goroutines.
func (s *PeerService) Close() {
	s.cancel()
	s.wg.Wait()
}

// serve answers peer's requests in order until the service closes, the
// epoch moves on or the peer is gone.
func (s *PeerService) serve(peer int) {
	for n := uint64(0); ; n++ {
		op, body, parts, err := s.recvMessage(s.ctx, peer, n)
		if err != nil {
			return
		}
		status, head, data := s.handle(peer, op, body, parts)
		if err := s.sendMessage(s.ctx, peer, n|respBit, status, head, data); err != nil {
			return
		}
	}
}

// handle carries out one request and returns the response.
func (s *PeerService) handle(peer int, op byte, body []byte, parts [][]byte) (byte, []byte, []byte) {
	fail := func(err error) (byte, []byte, []byte) { return statusFail, []byte(err.Error()), nil }
	switch op {
	case opPut:
		f, hl, dl, err := unmarshalFragmentHeader(body)
		if err != nil {
			return fail(err)
		}
		if hl != len(body) {
			return fail(fmt.Errorf("put from rank %d: %d bytes after the fragment header", peer, len(body)-hl))
		}
		f.Data = joinParts(parts, dl)
		if len(f.Data) != dl {
			return fail(fmt.Errorf("put from rank %d: %d data bytes, header says %d", peer, len(f.Data), dl))
		}
		if f.Rank != peer {
			return fail(fmt.Errorf("put from rank %d of a fragment of rank %d: a rank sends only its own", peer, f.Rank))
		}
		if err := s.h.Put(&f); err != nil {
			return fail(err)
		}
		testCorruptHeld(&f) // off unless TERN_TEST_CORRUPT_FRAGMENT is set
		return statusOK, nil, nil
	case opGet:
		if len(body) != 14 {
			return fail(fmt.Errorf("get from rank %d: request of %d bytes, want 14", peer, len(body)))
		}
		le := binary.LittleEndian
		f, err := s.h.Get(int(le.Uint32(body)), int64(le.Uint64(body[4:])), int(le.Uint16(body[12:])))
		if err != nil {
			return statusMiss, []byte(err.Error()), nil
		}
		hd, err := marshalFragmentHeader(f, len(f.Data))
		if err != nil {
			return fail(err)
		}
		return statusOK, hd, f.Data
	}
	return fail(fmt.Errorf("request from rank %d: unknown op %d", peer, op))
}

func joinParts(parts [][]byte, n int) []byte {
	if len(parts) == 1 {
		return parts[0]
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// recvMessage receives message seq from peer: its op or status, head and
// data parts. A Recv that times out while the peer is alive and idle is
// retried; any other transport error ends the wait.
func (s *PeerService) recvMessage(ctx context.Context, peer int, seq uint64) (byte, []byte, [][]byte, error) {
	recv := func(part uint32) ([]byte, error) {
		for {
			b, err := s.tr.Recv(ctx, peer, comm.Tag{Kind: comm.KindSnapshot, Seq: seq, Part: part})
			if err != nil && errors.Is(err, comm.ErrTimeout) && ctx.Err() == nil && seq&respBit == 0 {
				continue // an idle peer: keep serving it
			}
			return b, err
		}
	}
	head, err := recv(0)
	if err != nil {
		return 0, nil, nil, err
	}
	if len(head) < 5 {
		return 0, nil, nil, fmt.Errorf("message %d from rank %d: head of %d bytes", seq&^respBit, peer, len(head))
	}
	np := binary.LittleEndian.Uint32(head[1:])
	if np > maxParts {
		return 0, nil, nil, fmt.Errorf("message %d from rank %d: %d parts, at most %d", seq&^respBit, peer, np, maxParts)
	}
	parts := make([][]byte, np)
	for i := range parts {
		if parts[i], err = recv(uint32(i + 1)); err != nil {
			return 0, nil, nil, err
		}
	}
	return head[0], head[5:], parts, nil
}

// sendMessage sends message seq to peer: code (op or status), head, and
// data in chunks.
func (s *PeerService) sendMessage(ctx context.Context, peer int, seq uint64, code byte, head, data []byte) error {
	np := (len(data) + chunkBytes - 1) / chunkBytes
	h := make([]byte, 5, 5+len(head))
	h[0] = code
	binary.LittleEndian.PutUint32(h[1:], uint32(np))
	h = append(h, head...)
	tag := comm.Tag{Kind: comm.KindSnapshot, Seq: seq}
	if err := s.tr.Send(ctx, peer, tag, h); err != nil {
		return err
	}
	for i := range np {
		tag.Part = uint32(i + 1)
		if err := s.tr.Send(ctx, peer, tag, data[i*chunkBytes:min(len(data), (i+1)*chunkBytes)]); err != nil {
			return err
		}
	}
	return nil
}

// call sends one request to peer and waits for its response.
func (s *PeerService) call(ctx context.Context, peer int, op byte, head, data []byte) (byte, []byte, [][]byte, error) {
	if peer < 0 || peer >= s.tr.World() || peer == s.tr.Rank() {
		return 0, nil, nil, fmt.Errorf("peer rank %d: want another rank in 0..%d", peer, s.tr.World()-1)
	}
	// The service's context carries the epoch and stops with Close; the
	// caller's bounds this call.
	cctx, stop := context.WithCancel(s.ctx)
	defer stop()
	defer context.AfterFunc(ctx, stop)()
	n := s.next[peer].Add(1) - 1
	if err := s.sendMessage(cctx, peer, n, op, head, data); err != nil {
		return 0, nil, nil, err
	}
	return s.recvMessage(cctx, peer, n|respBit)
}

// Put sends fragment f to peer to hold, and returns once the peer has
// verified and stored it.
func (s *PeerService) Put(ctx context.Context, peer int, f *Fragment) error {
	hd, err := marshalFragmentHeader(f, len(f.Data))
	if err != nil {
		return err
	}
	status, msg, _, err := s.call(ctx, peer, opPut, hd, f.Data)
	if err != nil {
		return fmt.Errorf("send fragment %d of rank %d step %d to rank %d: %w", f.Index, f.Rank, f.Step, peer, err)
	}
	if status != statusOK {
		return fmt.Errorf("send fragment %d of rank %d step %d to rank %d: refused: %s", f.Index, f.Rank, f.Step, peer, msg)
	}
	return nil
}

// Get fetches fragment index of owner's step from peer. The fragment is
// checked against its own header (Verify); Decode checks it against the
// manifest.
func (s *PeerService) Get(ctx context.Context, peer, owner int, step int64, index int) (Fragment, error) {
	req := make([]byte, 14)
	binary.LittleEndian.PutUint32(req, uint32(owner))
	binary.LittleEndian.PutUint64(req[4:], uint64(step))
	binary.LittleEndian.PutUint16(req[12:], uint16(index))
	what := func() string {
		return fmt.Sprintf("fetch fragment %d of rank %d step %d from rank %d", index, owner, step, peer)
	}
	status, body, parts, err := s.call(ctx, peer, opGet, req, nil)
	if err != nil {
		return Fragment{}, fmt.Errorf("%s: %w", what(), err)
	}
	switch status {
	case statusOK:
	case statusMiss:
		return Fragment{}, fmt.Errorf("%s: %w", what(), ErrNotHeld)
	default:
		return Fragment{}, fmt.Errorf("%s: refused: %s", what(), body)
	}
	f, hl, dl, err := unmarshalFragmentHeader(body)
	if err != nil {
		return Fragment{}, fmt.Errorf("%s: %w", what(), err)
	}
	if hl != len(body) {
		return Fragment{}, fmt.Errorf("%s: %w: %d bytes after the header", what(), ErrStateCorrupt, len(body)-hl)
	}
	f.Data = joinParts(parts, dl)
	if err := f.Verify(); err != nil {
		return Fragment{}, fmt.Errorf("%s: %w: %v", what(), ErrStateCorrupt, err)
	}
	return f, nil
}

// Restore rebuilds rank's state shard of the manifest's step from its
// peers' fragments: it asks k holders at once (the data fragments first,
// so a healthy restore only concatenates), and for every fragment that is
// missing, corrupt or not the committed one it asks another holder, until
// k verified fragments are in or no holder is left (then the error wraps
// ErrUnrecoverable: fall back to the durable checkpoint). rankOf maps a
// worker to the rank serving its fragments (ServingRank), -1 if none does.
func (s *PeerService) Restore(ctx context.Context, m *PeerManifest, rank int, rankOf func(worker string) int) ([]byte, error) {
	want, err := m.Expect(rank)
	if err != nil {
		return nil, err
	}
	c := m.Code
	type result struct {
		f   Fragment
		err error
	}
	results := make(chan result, c.Fragments())
	next, inflight := 0, 0
	var rejected []string
	launch := func() bool {
		for next < c.Fragments() {
			i := next
			next++
			peer := rankOf(m.HolderOf(rank, i))
			if peer < 0 || peer == s.tr.Rank() {
				rejected = append(rejected, fmt.Sprintf("fragment %d: its holder %s serves no other rank", i, m.HolderOf(rank, i)))
				continue
			}
			inflight++
			go func() {
				f, err := s.Get(ctx, peer, rank, m.Step, i)
				results <- result{f, err}
			}()
			return true
		}
		return false
	}
	for range c.K {
		launch()
	}
	var good []Fragment
	for inflight > 0 {
		r := <-results
		inflight--
		if r.err == nil {
			r.err = want.Check(&r.f)
		}
		if r.err != nil {
			rejected = append(rejected, r.err.Error())
			launch()
			continue
		}
		good = append(good, r.f)
		if len(good) == c.K {
			break
		}
	}
	// Fetches still in flight finish into the buffered channel.
	if len(good) < c.K {
		sort.Strings(rejected)
		return nil, &UnrecoverableError{Rank: rank, Step: m.Step, Have: len(good), Need: c.K, Rejected: rejected}
	}
	return Decode(want, good)
}
