package snapshot

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// PeerManifest is what commits a peer snapshot: for every rank, its
// state's size and CRC, its fragments' CRCs and which worker holds each.
// The coordinator writes it with the committed step in one etcd
// transaction, so it must stay well under etcd's request limit (1.5 MiB
// by default, research fault-tolerance.md §7.2) at a thousand ranks:
// MarshalPeerManifest's binary form costs at most
// PeerManifestBytesPerRank bytes per rank plus the worker table.
type PeerManifest struct {
	Job     string
	Step    int64
	Epoch   uint64
	Code    Code
	Workers []string // worker ids; RankEntry.Holders index into it
	Ranks   []RankEntry
}

// RankEntry is one rank's part of a PeerManifest.
type RankEntry struct {
	StateBytes   int64
	StateCRC     uint32
	FragmentCRCs []uint32
	Holders      []int // Holders[i]: index in Workers of fragment i's holder
}

// Expect is what a restore of rank must find, for Decode.
func (m *PeerManifest) Expect(rank int) (Expect, error) {
	if rank < 0 || rank >= len(m.Ranks) {
		return Expect{}, fmt.Errorf("peer manifest of step %d: rank %d not in 0..%d", m.Step, rank, len(m.Ranks)-1)
	}
	e := m.Ranks[rank]
	return Expect{Job: m.Job, Step: m.Step, Rank: rank, Code: m.Code, StateBytes: e.StateBytes, StateCRC: e.StateCRC, FragmentCRCs: e.FragmentCRCs}, nil
}

// HolderOf is the worker holding fragment i of rank.
func (m *PeerManifest) HolderOf(rank, i int) string { return m.Workers[m.Ranks[rank].Holders[i]] }

const (
	peerManifestMagic = "TPM1"
	// maxWorkerIDBytes bounds one worker id in the manifest.
	maxWorkerIDBytes = 253
)

// PeerManifestBytesPerRank is the most one rank costs in the binary
// manifest of code c with w workers: the state size (a varint, at most
// 10 bytes), its CRC (4), and per fragment a CRC (4) and a holder index
// (a varint of w-1).
func PeerManifestBytesPerRank(c Code, w int) int {
	return binary.MaxVarintLen64 + 4 + c.Fragments()*(4+uvarintLen(uint64(max(w-1, 0))))
}

// PeerManifestBound is the most MarshalPeerManifest can return for ranks
// ranks, w workers with ids of at most idBytes bytes, and a job name of
// jobBytes: the header, the worker table, the ranks and the trailing CRC.
func PeerManifestBound(c Code, ranks, w, idBytes, jobBytes int) int {
	header := len(peerManifestMagic) + 6*binary.MaxVarintLen64 + jobBytes
	table := w * (uvarintLen(uint64(idBytes)) + idBytes)
	return header + table + binary.MaxVarintLen64 + ranks*PeerManifestBytesPerRank(c, w) + 4
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}

// MarshalPeerManifest encodes m compactly (varints, a worker table, a
// trailing CRC32C).
func MarshalPeerManifest(m *PeerManifest) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, PeerManifestBound(m.Code, len(m.Ranks), len(m.Workers), maxWorkerIDBytes, len(m.Job)))
	b = append(b, peerManifestMagic...)
	b = binary.AppendUvarint(b, uint64(len(m.Job)))
	b = append(b, m.Job...)
	b = binary.AppendUvarint(b, uint64(m.Step))
	b = binary.AppendUvarint(b, m.Epoch)
	b = binary.AppendUvarint(b, uint64(m.Code.K))
	b = binary.AppendUvarint(b, uint64(m.Code.M))
	b = binary.AppendUvarint(b, uint64(len(m.Workers)))
	for _, w := range m.Workers {
		b = binary.AppendUvarint(b, uint64(len(w)))
		b = append(b, w...)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Ranks)))
	for _, e := range m.Ranks {
		b = binary.AppendUvarint(b, uint64(e.StateBytes))
		b = binary.LittleEndian.AppendUint32(b, e.StateCRC)
		for _, c := range e.FragmentCRCs {
			b = binary.LittleEndian.AppendUint32(b, c)
		}
		for _, h := range e.Holders {
			b = binary.AppendUvarint(b, uint64(h))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Update(0, castagnoli, b)), nil
}

func (m *PeerManifest) check() error {
	if err := m.Code.check(); err != nil {
		return fmt.Errorf("peer manifest: %w", err)
	}
	if m.Step < 0 || len(m.Job) > maxJobBytes {
		return fmt.Errorf("peer manifest: step %d or job name of %d bytes out of range", m.Step, len(m.Job))
	}
	for _, w := range m.Workers {
		if w == "" || len(w) > maxWorkerIDBytes {
			return fmt.Errorf("peer manifest: worker id %q: want 1..%d bytes", w, maxWorkerIDBytes)
		}
	}
	n := m.Code.Fragments()
	for r, e := range m.Ranks {
		if e.StateBytes <= 0 || len(e.FragmentCRCs) != n || len(e.Holders) != n {
			return fmt.Errorf("peer manifest: rank %d: state of %d bytes, %d fragment CRCs and %d holders (want > 0, %d, %d)", r, e.StateBytes, len(e.FragmentCRCs), len(e.Holders), n, n)
		}
		for _, h := range e.Holders {
			if h < 0 || h >= len(m.Workers) {
				return fmt.Errorf("peer manifest: rank %d: holder %d not in the %d workers", r, h, len(m.Workers))
			}
		}
	}
	return nil
}

// UnmarshalPeerManifest decodes and checks a manifest (CRC, every count and
// index bounded before use).
func UnmarshalPeerManifest(b []byte) (*PeerManifest, error) {
	bad := func(format string, args ...any) (*PeerManifest, error) {
		return nil, fmt.Errorf("%w: peer manifest: %s", ErrStateCorrupt, fmt.Sprintf(format, args...))
	}
	if len(b) < len(peerManifestMagic)+4 || string(b[:len(peerManifestMagic)]) != peerManifestMagic {
		return bad("%d bytes without the %q prefix", len(b), peerManifestMagic)
	}
	body := b[:len(b)-4]
	if got, want := crc32.Update(0, castagnoli, body), binary.LittleEndian.Uint32(b[len(b)-4:]); got != want {
		return bad("CRC32C %08x, recorded %08x", got, want)
	}
	d := decoder{b: body[len(peerManifestMagic):]}
	m := &PeerManifest{}
	m.Job = d.str(maxJobBytes)
	m.Step = int64(d.uvarint(1 << 62))
	m.Epoch = d.uvarint(1<<64 - 1)
	m.Code = Code{K: int(d.uvarint(MaxDataShards)), M: int(d.uvarint(MaxTolerate))}
	nw := d.uvarint(uint64(len(d.b)))
	for range nw {
		m.Workers = append(m.Workers, d.str(maxWorkerIDBytes))
	}
	nr := d.uvarint(uint64(len(d.b)))
	n := m.Code.Fragments()
	for range nr {
		if d.err != nil {
			break
		}
		e := RankEntry{StateBytes: int64(d.uvarint(1 << 62)), StateCRC: d.u32()}
		for range n {
			e.FragmentCRCs = append(e.FragmentCRCs, d.u32())
		}
		for range n {
			e.Holders = append(e.Holders, int(d.uvarint(nw)))
		}
		m.Ranks = append(m.Ranks, e)
	}
	if d.err != nil {
		return bad("%v", d.err)
	}
	if len(d.b) != 0 {
		return bad("%d bytes left over", len(d.b))
	}
	if err := m.check(); err != nil {
		return bad("%v", err)
	}
	return m, nil
}

// decoder reads varints and fields, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("truncated or overlong varint")
		return 0
	}
	if x > limit {
		d.err = fmt.Errorf("value %d above its bound %d", x, limit)
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) u32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.err = fmt.Errorf("truncated")
		return 0
	}
	x := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return x
}

func (d *decoder) str(limit int) string {
	n := d.uvarint(uint64(limit))
	if d.err != nil {
		return ""
	}
	if uint64(len(d.b)) < n {
		d.err = fmt.Errorf("truncated string")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
