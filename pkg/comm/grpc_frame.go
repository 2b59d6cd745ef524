package comm

import (
	"fmt"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Chunking limits of the gRPC transport. A message travels as chunks of at
// most ChunkBytes so that one frame stays far below gRPC's default 4 MiB
// receive limit, which this transport never raises: any message size works
// with stock gRPC settings on both ends.
const (
	// DefaultChunkBytes is the chunk size a sender uses unless told
	// otherwise; a collective's part (DefaultMaxPartBytes) fits in one chunk.
	DefaultChunkBytes = 1 << 20
	// MaxChunkBytes is the largest chunk a sender may use and a receiver
	// accepts.
	MaxChunkBytes = 1 << 20
	// DefaultMaxMessageBytes bounds the declared length of one message a
	// receiver accepts, so a peer cannot make it allocate without limit.
	DefaultMaxMessageBytes = 1 << 30

	// grpcMessageHeaderBytes is the length prefix gRPC puts before every
	// protobuf frame (1 flag byte, 4 length bytes); it is counted as framing.
	grpcMessageHeaderBytes = 5
	// maxFrameBytes is the receive limit set on the server: a full chunk plus
	// room for the chunk's other fields.
	maxFrameBytes = MaxChunkBytes + 4096
	// preallocBytes caps the buffer reserved for a message on its first
	// chunk; larger messages grow as their chunks arrive, so a declared
	// length alone never costs memory.
	preallocBytes = 64 << 20
)

// wireMsg is one complete message read from a stream.
type wireMsg struct {
	tag     Tag
	epoch   uint64
	payload []byte
	framing int64 // protobuf and gRPC framing bytes of all its chunks
}

// nextChunk returns the chunk of payload starting at off and the offset of
// the chunk after it. A message of n bytes takes max(1, ceil(n/chunkBytes))
// chunks; an empty one is a single chunk with no data.
func nextChunk(tag Tag, epoch uint64, payload []byte, off, chunkBytes int) (*ternv1.PeerChunk, int) {
	end := min(off+chunkBytes, len(payload))
	return &ternv1.PeerChunk{
		Kind:   uint32(tag.Kind),
		Seq:    tag.Seq,
		Part:   tag.Part,
		Epoch:  epoch,
		Length: uint64(len(payload)),
		Offset: uint64(off),
		Data:   payload[off:end],
		Last:   end == len(payload),
	}, end
}

// assembler rebuilds the messages of one stream from their chunks and checks
// every field it reads before using it. Chunks of one message are
// consecutive on a stream, so at most one message is in progress. After an
// error the stream is to be dropped: the assembler's state is then
// meaningless.
type assembler struct {
	maxBytes uint64
	active   bool
	head     *ternv1.PeerChunk // first chunk of the message in progress
	buf      []byte
}

func newAssembler(maxMessageBytes int) *assembler {
	return &assembler{maxBytes: uint64(maxMessageBytes)}
}

// add takes the next chunk of the stream and returns the message it
// completes, or nil if the message needs more chunks.
func (a *assembler) add(c *ternv1.PeerChunk) (*wireMsg, error) {
	n := uint64(len(c.Data))
	if n > MaxChunkBytes {
		return nil, fmt.Errorf("chunk of %d bytes: at most %d allowed", n, MaxChunkBytes)
	}
	if !a.active {
		if c.Offset != 0 {
			return nil, fmt.Errorf("first chunk of message %s has offset %d: must be 0", chunkTag(c), c.Offset)
		}
		if c.Kind >= uint32(numKinds) {
			return nil, fmt.Errorf("chunk kind %d: kinds are 0..%d", c.Kind, numKinds-1)
		}
		if c.Length > a.maxBytes {
			return nil, fmt.Errorf("message %s declares %d bytes: at most %d allowed", chunkTag(c), c.Length, a.maxBytes)
		}
	} else if h := a.head; c.Kind != h.Kind || c.Seq != h.Seq || c.Part != h.Part || c.Epoch != h.Epoch || c.Length != h.Length {
		return nil, fmt.Errorf("chunk of %s (epoch %d, %d bytes) arrived inside message %s (epoch %d, %d bytes): chunks of messages must not interleave",
			chunkTag(c), c.Epoch, c.Length, chunkTag(h), h.Epoch, h.Length)
	} else if c.Offset != uint64(len(a.buf)) {
		return nil, fmt.Errorf("chunk of message %s at offset %d: expected offset %d", chunkTag(c), c.Offset, len(a.buf))
	}
	// Offset is 0 or the bytes already held, both at most Length: no overflow.
	end := c.Offset + n
	if end > c.Length {
		return nil, fmt.Errorf("chunk of message %s covers bytes %d..%d beyond its length %d", chunkTag(c), c.Offset, end, c.Length)
	}
	if c.Last != (end == c.Length) {
		return nil, fmt.Errorf("chunk of message %s ends at %d of %d bytes with last=%v", chunkTag(c), end, c.Length, c.Last)
	}
	if !c.Last && n == 0 {
		return nil, fmt.Errorf("empty chunk of message %s that is not its last", chunkTag(c))
	}

	if !a.active && c.Last {
		// One chunk: its data, freshly unmarshalled, is the message.
		return &wireMsg{tag: chunkTag(c), epoch: c.Epoch, payload: c.Data}, nil
	}
	if !a.active {
		a.active, a.head = true, c
		a.buf = make([]byte, 0, min(c.Length, preallocBytes))
	}
	a.buf = append(a.buf, c.Data...)
	if !c.Last {
		return nil, nil
	}
	m := &wireMsg{tag: chunkTag(a.head), epoch: a.head.Epoch, payload: a.buf}
	a.active, a.head, a.buf = false, nil, nil
	return m, nil
}

// chunkTag is the tag a chunk belongs to; Kind may be out of range, which
// Tag's String shows as such.
func chunkTag(c *ternv1.PeerChunk) Tag {
	return Tag{Kind: Kind(min(c.Kind, 255)), Seq: c.Seq, Part: c.Part}
}
