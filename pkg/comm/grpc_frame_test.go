package comm

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// chunksOf cuts payload the way the sender does.
func chunksOf(tag Tag, epoch uint64, payload []byte, chunkBytes int) []*ternv1.PeerChunk {
	var cs []*ternv1.PeerChunk
	for off := 0; ; {
		c, next := nextChunk(tag, epoch, payload, off, chunkBytes)
		cs = append(cs, c)
		if c.Last {
			return cs
		}
		off = next
	}
}

func TestAssemblerRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 9, 10, 11, 95} {
		for _, chunk := range []int{1, 10, 1000} {
			payload := grpcPattern(n, n)
			tag := Tag{Kind: KindReduce, Seq: 3, Part: 4}
			cs := chunksOf(tag, 2, payload, chunk)
			if want := max(1, (n+chunk-1)/chunk); len(cs) != want {
				t.Errorf("%d bytes in chunks of %d: %d chunks, want %d", n, chunk, len(cs), want)
			}
			a := newAssembler(100)
			for i, c := range cs {
				m, err := a.add(c)
				if err != nil {
					t.Fatalf("%d bytes, chunk %d: %v", n, i, err)
				}
				if (m != nil) != (i == len(cs)-1) {
					t.Fatalf("%d bytes: message completed at chunk %d of %d", n, i, len(cs))
				}
				if m != nil && (m.tag != tag || m.epoch != 2 || !bytes.Equal(m.payload, payload)) {
					t.Fatalf("%d bytes in chunks of %d: got tag %v epoch %d %d bytes", n, chunk, m.tag, m.epoch, len(m.payload))
				}
			}
		}
	}
}

func TestAssemblerRejects(t *testing.T) {
	ok := func() *ternv1.PeerChunk {
		return &ternv1.PeerChunk{Kind: 1, Seq: 5, Length: 20, Offset: 0, Data: make([]byte, 10)}
	}
	cases := []struct {
		name  string
		first *ternv1.PeerChunk // fed before bad, nil for none
		bad   func() *ternv1.PeerChunk
		want  string
	}{
		{"offset of a first chunk", nil, func() *ternv1.PeerChunk { c := ok(); c.Offset = 10; return c }, "must be 0"},
		{"kind", nil, func() *ternv1.PeerChunk { c := ok(); c.Kind = uint32(numKinds); return c }, "kinds are"},
		{"length above maximum", nil, func() *ternv1.PeerChunk { c := ok(); c.Length = 101; return c }, "at most 100"},
		{"data beyond length", nil, func() *ternv1.PeerChunk { c := ok(); c.Length = 5; return c }, "beyond its length"},
		{"last flag missing", nil, func() *ternv1.PeerChunk { c := ok(); c.Length = 10; return c }, "last=false"},
		{"last flag early", nil, func() *ternv1.PeerChunk { c := ok(); c.Last = true; return c }, "last=true"},
		{"empty chunk not last", nil, func() *ternv1.PeerChunk { c := ok(); c.Data = nil; return c }, "empty chunk"},
		{"chunk too big", nil, func() *ternv1.PeerChunk {
			c := ok()
			c.Length, c.Data = MaxChunkBytes+1, make([]byte, MaxChunkBytes+1)
			return c
		}, "at most"},
		{"gap", ok(), func() *ternv1.PeerChunk { c := ok(); c.Offset = 15; c.Data = make([]byte, 5); c.Last = true; return c }, "expected offset 10"},
		{"interleaved message", ok(), func() *ternv1.PeerChunk { c := ok(); c.Seq = 6; c.Offset = 10; c.Last = true; return c }, "interleave"},
		{"length changed", ok(), func() *ternv1.PeerChunk { c := ok(); c.Length = 30; c.Offset = 10; return c }, "interleave"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAssembler(100)
			if tc.first != nil {
				if _, err := a.add(tc.first); err != nil {
					t.Fatal(err)
				}
			}
			_, err := a.add(tc.bad())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// encodeFrames joins frames as the fuzz input format: each a uvarint length
// then the marshalled ExchangeRequest.
func encodeFrames(t testing.TB, cs ...*ternv1.PeerChunk) []byte {
	var out []byte
	for _, c := range cs {
		b, err := proto.Marshal(&ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Chunk{Chunk: c}})
		if err != nil {
			t.Fatal(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzAssembler feeds arbitrary frames, as they would come off a stream, to
// the validation and reassembly a receiver runs. Whatever the input: no
// panic, and every message it yields has exactly its declared length, at
// most the maximum, made of the data of the chunks that built it.
func FuzzAssembler(f *testing.F) {
	tag := Tag{Kind: KindAllGather, Seq: 9, Part: 1}
	f.Add(encodeFrames(f, chunksOf(tag, 1, grpcPattern(1, 25), 10)...))
	f.Add(encodeFrames(f, chunksOf(tag, 0, nil, 10)...))
	f.Add(encodeFrames(f, append(chunksOf(tag, 1, grpcPattern(2, 7), 3), chunksOf(Tag{Seq: 1}, 1, grpcPattern(3, 40), 16)...)...))
	cs := chunksOf(tag, 1, grpcPattern(4, 30), 10)
	f.Add(encodeFrames(f, cs[0], cs[2], cs[1]))
	f.Add(encodeFrames(f, &ternv1.PeerChunk{Kind: 200, Length: 1 << 40, Offset: 1 << 62, Data: []byte{1}, Last: true}))
	f.Add([]byte{0x05, 0x12, 0x03, 0x08, 0x01, 0x2a})
	const maxBytes = 64
	f.Fuzz(func(t *testing.T, data []byte) {
		a := newAssembler(maxBytes)
		var sofar []byte // data of the message in progress, as the fuzzer sent it
		for len(data) > 0 {
			n, k := binary.Uvarint(data)
			if k <= 0 || n > uint64(len(data)-k) {
				return
			}
			frame := data[k : k+int(n)]
			data = data[k+int(n):]
			var req ternv1.ExchangeRequest
			if proto.Unmarshal(frame, &req) != nil || req.GetChunk() == nil {
				continue
			}
			c := req.GetChunk()
			m, err := a.add(c)
			if err != nil {
				return // the transport drops the stream here
			}
			sofar = append(sofar, c.Data...)
			if m == nil {
				continue
			}
			if uint64(len(m.payload)) != c.Length || len(m.payload) > maxBytes || !bytes.Equal(m.payload, sofar) {
				t.Fatalf("message %v: %d bytes, declared %d, built from %d bytes of chunk data", m.tag, len(m.payload), c.Length, len(sofar))
			}
			if m.tag.Kind >= numKinds {
				t.Fatalf("message of kind %d accepted", m.tag.Kind)
			}
			sofar = sofar[:0]
		}
	})
}
