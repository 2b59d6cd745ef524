package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// Peer layer (L1, research fault-tolerance.md §8.2 "local copy + RS(k, m−1)
// dispersal"): a rank keeps its state shard S locally, splits it into k
// data fragments, adds m−1 Reed-Solomon parity fragments, and sends the
// k+m−1 fragments to as many peers in other failure domains. Any m losses
// leave the state recoverable: if the owner survives its local copy is
// intact; if it is lost, at most m−1 of its fragment holders are, so at
// least k fragments remain and any k rebuild S. Each snapshot sends
// (k+m−1)/k·S, against m·S for m extra replicas.

// Limits of a fragment code; MaxDataShards matches spec.snapshot.dataShards.
const (
	MaxDataShards = 32
	MaxTolerate   = 8
)

// Code is one erasure code: K data fragments, tolerance M (so M−1 parity
// fragments), K+M−1 fragments in all.
type Code struct{ K, M int }

// Parity is the number of parity fragments.
func (c Code) Parity() int { return c.M - 1 }

// Fragments is the number of fragments a rank sends to peers.
func (c Code) Fragments() int { return c.K + c.M - 1 }

func (c Code) String() string { return fmt.Sprintf("k=%d m=%d", c.K, c.M) }

func (c Code) check() error {
	if c.K < 1 || c.K > MaxDataShards || c.M < 1 || c.M > MaxTolerate {
		return fmt.Errorf("code %v: k must be in 1..%d and m in 1..%d", c, MaxDataShards, MaxTolerate)
	}
	return nil
}

// FragmentBytes is the size of each fragment of a state shard of n bytes:
// n/k rounded up (the last data fragment is zero-padded).
func (c Code) FragmentBytes(n int) int { return (n + c.K - 1) / c.K }

// Reserve is the spare capacity to pass to MarshalState so that Encode
// adds the parity fragments without copying the state: room for the
// padding and the parity.
func (c Code) Reserve(n int) int { return c.FragmentBytes(n)*c.Fragments() - n }

// encoders holds one encoder per code: an encoder is safe for concurrent
// use, and building one inverts a matrix (research §8.6).
var encoders struct {
	sync.Mutex
	m map[Code]reedsolomon.Encoder
}

func encoderFor(c Code) (reedsolomon.Encoder, error) {
	encoders.Lock()
	defer encoders.Unlock()
	if e, ok := encoders.m[c]; ok {
		return e, nil
	}
	var opts []reedsolomon.Option
	if c.Parity() == 1 {
		// One parity fragment is then the XOR of the data fragments.
		opts = append(opts, reedsolomon.WithFastOneParityMatrix())
	}
	e, err := reedsolomon.New(c.K, c.Parity(), opts...)
	if err != nil {
		return nil, fmt.Errorf("reed-solomon code %v: %w", c, err)
	}
	if encoders.m == nil {
		encoders.m = make(map[Code]reedsolomon.Encoder)
	}
	encoders.m[c] = e
	return e, nil
}

// FragmentHeader says what a fragment is a piece of. Every field is
// covered by the header's CRC on the wire, and Data by CRC.
type FragmentHeader struct {
	Job        string
	Step       int64
	Rank       int // owner of the state
	Index      int // 0..K-1 data, K.. parity
	K, M       int
	StateBytes int64  // length of the state shard before padding
	StateCRC   uint32 // CRC32C of the state shard
	CRC        uint32 // CRC32C of this fragment's Data
}

// Code is the header's erasure code.
func (h FragmentHeader) Code() Code { return Code{K: h.K, M: h.M} }

// FragmentBytes is the length of every fragment of this state.
func (h FragmentHeader) FragmentBytes() int { return h.Code().FragmentBytes(int(h.StateBytes)) }

// Fragment is one erasure-coded piece of a rank's state shard.
type Fragment struct {
	FragmentHeader
	Data []byte
}

// Verify checks the fragment against its own header: index in range,
// length right, CRC of the data. It cannot tell a fragment of another
// generation; compare against the committed manifest for that.
func (f *Fragment) Verify() error {
	if err := f.Code().check(); err != nil {
		return err
	}
	if f.Index < 0 || f.Index >= f.Code().Fragments() {
		return fmt.Errorf("fragment index %d outside 0..%d", f.Index, f.Code().Fragments()-1)
	}
	if len(f.Data) != f.FragmentBytes() {
		return fmt.Errorf("fragment %d has %d bytes, want %d", f.Index, len(f.Data), f.FragmentBytes())
	}
	if got := crc32.Update(0, castagnoli, f.Data); got != f.CRC {
		return fmt.Errorf("fragment %d: CRC32C %08x, header says %08x", f.Index, got, f.CRC)
	}
	return nil
}

// Encode cuts a state shard into c.Fragments() fragments. The data
// fragments alias state (which must not change afterwards); when state
// has Reserve spare capacity the parity fragments live there too, so
// nothing is copied.
func Encode(job string, step int64, rank int, state []byte, c Code) ([]Fragment, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if len(state) == 0 {
		return nil, fmt.Errorf("encode rank %d step %d: empty state", rank, step)
	}
	enc, err := encoderFor(c)
	if err != nil {
		return nil, err
	}
	n := len(state)
	stateCRC := crc32.Update(0, castagnoli, state)
	shards, err := enc.Split(state)
	if err != nil {
		return nil, fmt.Errorf("encode rank %d step %d: %w", rank, step, err)
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("encode rank %d step %d: %w", rank, step, err)
	}
	out := make([]Fragment, len(shards))
	for i, s := range shards {
		out[i] = Fragment{
			FragmentHeader: FragmentHeader{Job: job, Step: step, Rank: rank, Index: i, K: c.K, M: c.M,
				StateBytes: int64(n), StateCRC: stateCRC, CRC: crc32.Update(0, castagnoli, s)},
			Data: s,
		}
	}
	return out, nil
}

// ErrUnrecoverable is wrapped by the error of Decode when fewer than k
// intact fragments are left: more failure domains were lost than the code
// tolerates, so the caller must fall back to the durable checkpoint.
var ErrUnrecoverable = errors.New("snapshot unrecoverable from peers")

// UnrecoverableError says how many intact fragments were found and why
// the others were refused.
type UnrecoverableError struct {
	Rank       int
	Step       int64
	Have, Need int
	Rejected   []string
}

func (e *UnrecoverableError) Error() string {
	s := fmt.Sprintf("rank %d step %d: %d intact fragments, need %d (fall back to the durable checkpoint)", e.Rank, e.Step, e.Have, e.Need)
	if len(e.Rejected) > 0 {
		s += "; rejected: " + strings.Join(e.Rejected, "; ")
	}
	return s
}

func (e *UnrecoverableError) Unwrap() error { return ErrUnrecoverable }

// Expect is what a restore knows from the committed manifest about the
// state it wants: a fragment that does not match it (another job, rank,
// step or code, or a hash the manifest does not list) is refused like a
// corrupt one.
type Expect struct {
	Job          string
	Step         int64
	Rank         int
	Code         Code
	StateBytes   int64
	StateCRC     uint32
	FragmentCRCs []uint32 // by index; nil skips the per-fragment check
}

// Check refuses a fragment that is missing, fails its own CRC, or is not
// the one want describes.
func (want Expect) Check(f *Fragment) error {
	c := want.Code
	switch {
	case f.Data == nil:
		return fmt.Errorf("fragment %d: missing", f.Index)
	case f.Job != want.Job || f.Step != want.Step || f.Rank != want.Rank || f.Code() != c || f.StateBytes != want.StateBytes || f.StateCRC != want.StateCRC:
		return fmt.Errorf("fragment %d is of job %q rank %d step %d %v, %d bytes, state CRC %08x; want job %q rank %d step %d %v, %d bytes, state CRC %08x",
			f.Index, f.Job, f.Rank, f.Step, f.Code(), f.StateBytes, f.StateCRC, want.Job, want.Rank, want.Step, c, want.StateBytes, want.StateCRC)
	}
	if err := f.Verify(); err != nil {
		return err
	}
	if want.FragmentCRCs != nil && (f.Index >= len(want.FragmentCRCs) || want.FragmentCRCs[f.Index] != f.CRC) {
		return fmt.Errorf("fragment %d: CRC32C %08x is not the committed one", f.Index, f.CRC)
	}
	return nil
}

// Decode rebuilds the state shard from any k fragments that verify and
// match want; frags may hold nil-data, corrupt, stale or duplicate
// fragments, which are skipped. It returns the state after checking its
// CRC, or an *UnrecoverableError.
func Decode(want Expect, frags []Fragment) ([]byte, error) {
	c := want.Code
	if err := c.check(); err != nil {
		return nil, err
	}
	enc, err := encoderFor(c)
	if err != nil {
		return nil, err
	}
	shards := make([][]byte, c.Fragments())
	var rejected []string
	have := 0
	for i := range frags {
		f := &frags[i]
		if err := want.Check(f); err != nil {
			rejected = append(rejected, err.Error())
			continue
		}
		if shards[f.Index] != nil {
			continue // a duplicate of one already taken
		}
		shards[f.Index] = f.Data
		have++
	}
	if have < c.K {
		return nil, &UnrecoverableError{Rank: want.Rank, Step: want.Step, Have: have, Need: c.K, Rejected: rejected}
	}
	// Reconstruct writes the missing data fragments into shards; the
	// fragments passed in belong to the caller and are only read.
	if err := enc.ReconstructData(shards); err != nil {
		return nil, fmt.Errorf("decode rank %d step %d: %w", want.Rank, want.Step, err)
	}
	out := make([]byte, 0, c.FragmentBytes(int(want.StateBytes))*c.K)
	for _, s := range shards[:c.K] {
		out = append(out, s...)
	}
	out = out[:want.StateBytes]
	if got := crc32.Update(0, castagnoli, out); got != want.StateCRC {
		return nil, fmt.Errorf("decode rank %d step %d: %w: rebuilt state CRC32C %08x, want %08x", want.Rank, want.Step, ErrStateCorrupt, got, want.StateCRC)
	}
	return out, nil
}

// Fragment wire format: magic "TFRG", u16 version, u16 job length, job,
// i64 step, u32 rank, u16 index, u16 k, u16 m, i64 state bytes, u32 state
// CRC, u32 fragment CRC, u32 data length, u32 CRC32C of everything so far,
// then the data.
const (
	fragMagic   = "TFRG"
	fragVersion = 1
	maxJobBytes = 1 << 10
)

// MarshalFragment encodes f for the wire: its header, then its data.
func MarshalFragment(f *Fragment) ([]byte, error) {
	h, err := marshalFragmentHeader(f, len(f.Data))
	if err != nil {
		return nil, err
	}
	return append(h, f.Data...), nil
}

// marshalFragmentHeader encodes f's header for a fragment of dataLen
// bytes; the data may travel separately.
func marshalFragmentHeader(f *Fragment, dataLen int) ([]byte, error) {
	if len(f.Job) > maxJobBytes {
		return nil, fmt.Errorf("fragment: job name of %d bytes, at most %d", len(f.Job), maxJobBytes)
	}
	hl := fragHeaderBytes(len(f.Job))
	b := make([]byte, hl, hl+dataLen)
	p := copy(b, fragMagic)
	le := binary.LittleEndian
	le.PutUint16(b[p:], fragVersion)
	le.PutUint16(b[p+2:], uint16(len(f.Job)))
	p += 4
	p += copy(b[p:], f.Job)
	le.PutUint64(b[p:], uint64(f.Step))
	le.PutUint32(b[p+8:], uint32(f.Rank))
	le.PutUint16(b[p+12:], uint16(f.Index))
	le.PutUint16(b[p+14:], uint16(f.K))
	le.PutUint16(b[p+16:], uint16(f.M))
	le.PutUint64(b[p+18:], uint64(f.StateBytes))
	le.PutUint32(b[p+26:], f.StateCRC)
	le.PutUint32(b[p+30:], f.CRC)
	le.PutUint32(b[p+34:], uint32(dataLen))
	p += 38
	le.PutUint32(b[p:], crc32.Update(0, castagnoli, b[:p]))
	return b, nil
}

func fragHeaderBytes(job int) int { return len(fragMagic) + 4 + job + 38 + 4 }

// UnmarshalFragment decodes a fragment from the wire, checking the header
// CRC and every bound, and the data against its CRC (Verify). The data
// aliases b.
func UnmarshalFragment(b []byte) (Fragment, error) {
	f, hl, dl, err := unmarshalFragmentHeader(b)
	if err != nil {
		return Fragment{}, err
	}
	if dl != len(b)-hl {
		return Fragment{}, fmt.Errorf("%w: fragment: header says %d data bytes, %d follow", ErrStateCorrupt, dl, len(b)-hl)
	}
	f.Data = b[hl:]
	if err := f.Verify(); err != nil {
		return Fragment{}, fmt.Errorf("%w: fragment: %v", ErrStateCorrupt, err)
	}
	return f, nil
}

// unmarshalFragmentHeader decodes the header at the start of b and returns
// it with the header's length and the data length it announces.
func unmarshalFragmentHeader(b []byte) (Fragment, int, int, error) {
	bad := func(format string, args ...any) (Fragment, int, int, error) {
		return Fragment{}, 0, 0, fmt.Errorf("%w: fragment: %s", ErrStateCorrupt, fmt.Sprintf(format, args...))
	}
	le := binary.LittleEndian
	if len(b) < fragHeaderBytes(0) || string(b[:4]) != fragMagic {
		return bad("%d bytes without the %q prefix", len(b), fragMagic)
	}
	if v := le.Uint16(b[4:]); v != fragVersion {
		return bad("version %d, this build reads %d", v, fragVersion)
	}
	jl := int(le.Uint16(b[6:]))
	hl := fragHeaderBytes(jl)
	if jl > maxJobBytes || len(b) < hl {
		return bad("header of %d bytes in %d", hl, len(b))
	}
	p := 8 + jl
	if got, want := crc32.Update(0, castagnoli, b[:hl-4]), le.Uint32(b[hl-4:]); got != want {
		return bad("header CRC32C %08x, recorded %08x", got, want)
	}
	f := Fragment{FragmentHeader: FragmentHeader{
		Job:        string(b[8:p]),
		Step:       int64(le.Uint64(b[p:])),
		Rank:       int(le.Uint32(b[p+8:])),
		Index:      int(le.Uint16(b[p+12:])),
		K:          int(le.Uint16(b[p+14:])),
		M:          int(le.Uint16(b[p+16:])),
		StateBytes: int64(le.Uint64(b[p+18:])),
		StateCRC:   le.Uint32(b[p+26:]),
		CRC:        le.Uint32(b[p+30:]),
	}}
	dl := int(le.Uint32(b[p+34:]))
	if f.StateBytes < 0 || f.Step < 0 {
		return bad("negative step %d or state size %d", f.Step, f.StateBytes)
	}
	if err := f.Code().check(); err != nil {
		return bad("%v", err)
	}
	if dl != f.FragmentBytes() {
		return bad("%d data bytes announced, the state of %d bytes has fragments of %d", dl, f.StateBytes, f.FragmentBytes())
	}
	return f, hl, dl, nil
}

func crcCastagnoli(b []byte) uint32 { return crc32.Update(0, castagnoli, b) }
