package compress

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// randPayload fills a payload of l with k distinct random indices per chunk
// (increasing) and normal values, a few of them zero; dense values normal.
func randPayload(l *Layout, rng *rand.Rand) []Tensor {
	ts := make([]Tensor, len(l.Tensors))
	for i, s := range l.Tensors {
		if s.Kind == Dense {
			ts[i].Val = randVec(rng, s.Len)
			continue
		}
		ce := s.Grid.ChunkElems()
		for c := 0; c < s.Grid.Chunks(); c++ {
			perm := rng.Perm(ce)[:s.K]
			slices.Sort(perm)
			for _, ix := range perm {
				v := float32(rng.NormFloat64())
				if rng.IntN(10) == 0 {
					v = 0
				}
				ts[i].Idx = append(ts[i].Idx, uint16(ix))
				ts[i].Val = append(ts[i].Val, v)
			}
		}
	}
	return ts
}

func mustLayout(t testing.TB, shapes []TensorShape, o Options) *Layout {
	t.Helper()
	l, err := NewLayout(shapes, o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var wireShapes = []TensorShape{
	{"embed", []int{97, 64}}, {"norm", []int{64}}, {"q", []int{64, 64}},
	{"up", []int{176, 64}}, {"down", []int{64, 176}}, {"small", []int{5, 3}},
}

// TestPayloadBytes pins the byte formula to hand-computed values and checks
// that every encoded payload is exactly as long as the formula says.
func TestPayloadBytes(t *testing.T) {
	cases := []struct {
		shapes []TensorShape
		o      Options
		want   int
	}{
		// One 64×64 chunk at k = 32: 20+9 header, 32·2 indices + 32·2 bf16.
		{[]TensorShape{{"w", []int{64, 64}}}, Options{64, 32, BF16}, 29 + 128},
		// Signs: 32·2 indices + 4 bytes of bits + 2-byte scale.
		{[]TensorShape{{"w", []int{64, 64}}}, Options{64, 32, Sign}, 29 + 70},
		// Psyche's k = 8: 16 + 1 + 2 per chunk.
		{[]TensorShape{{"w", []int{64, 64}}}, Options{64, 8, Sign}, 29 + 19},
		// k = 3 signs still take a whole byte per chunk.
		{[]TensorShape{{"w", []int{8, 8}}}, Options{4, 3, Sign}, 29 + 4*(6+1+2)},
		// 176×64 pads to three chunks; the 64-vector travels dense, 2 bytes
		// a value in either format.
		{[]TensorShape{{"w", []int{176, 64}}, {"g", []int{64}}}, Options{64, 32, BF16}, 20 + 18 + 3*128 + 128},
		{[]TensorShape{{"w", []int{176, 64}}, {"g", []int{64}}}, Options{64, 8, Sign}, 20 + 18 + 3*19 + 128},
		// k clamps to the 15 coefficients of a 5×3 tensor.
		{[]TensorShape{{"w", []int{5, 3}}}, Options{64, 32, BF16}, 29 + 15*4},
	}
	for _, c := range cases {
		got, err := PayloadBytes(c.shapes, c.o)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("PayloadBytes(%v, %+v) = %d, want %d", c.shapes, c.o, got, c.want)
		}
	}
	rng := rand.New(rand.NewPCG(11, 12))
	for _, f := range []Format{BF16, Sign} {
		for _, k := range []int{1, 3, 8, 32, 100} {
			l := mustLayout(t, wireShapes, Options{64, k, f})
			// The formula, written out independently of Layout.
			want := 20 + 9*len(wireShapes)
			for _, s := range wireShapes {
				if len(s.Shape) == 1 {
					want += 2 * s.Shape[0]
					continue
				}
				g, _ := NewGrid(s.Shape, 64)
				kk := min(k, g.ChunkElems())
				per := 2*kk + 2*kk
				if f == Sign {
					per = 2*kk + (kk+7)/8 + 2
				}
				want += g.Chunks() * per
			}
			b, err := l.Encode(nil, randPayload(l, rng))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != want || l.Bytes() != want {
				t.Errorf("%v k=%d: encoded %d bytes, Layout.Bytes %d, formula %d", f, k, len(b), l.Bytes(), want)
			}
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, f := range []Format{BF16, Sign} {
		for _, k := range []int{1, 5, 32} {
			l := mustLayout(t, wireShapes, Options{64, k, f})
			in := randPayload(l, rng)
			b, err := l.Encode(nil, in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := l.Decode(b, nil)
			if err != nil {
				t.Fatalf("%v k=%d: %v", f, k, err)
			}
			for i, s := range l.Tensors {
				if !slices.Equal(out[i].Idx, in[i].Idx) {
					t.Fatalf("%v tensor %d: indices changed", f, i)
				}
				for j, v := range in[i].Val {
					want := v
					switch {
					case s.Kind == Dense || f == BF16:
						want = tensor.ToBF16(v).Float32()
					default:
						c := j / s.K
						var sum float64
						for _, u := range in[i].Val[c*s.K : (c+1)*s.K] {
							sum += math.Abs(float64(u))
						}
						want = tensor.ToBF16(float32(sum / float64(s.K))).Float32()
						if math.Signbit(float64(v)) {
							want = -want
						}
					}
					if math.Float32bits(out[i].Val[j]) != math.Float32bits(want) {
						t.Fatalf("%v k=%d tensor %d value %d: decoded %v from %v, want %v", f, k, i, j, out[i].Val[j], v, want)
					}
				}
			}
			// A decoded payload re-encodes to the same bytes, and decoding
			// into the previous result reuses it.
			again, err := l.Encode(nil, out)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("%v k=%d: re-encoding the decoded payload gave different bytes (err %v)", f, k, err)
			}
			if _, err := l.Decode(b, out); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A sign chunk whose selected values are all zero has scale 0 and decodes
// to zeros, not to ±1 votes.
func TestSignZeroChunkDecodesToZero(t *testing.T) {
	l := mustLayout(t, []TensorShape{{"w", []int{4, 4}}}, Options{4, 3, Sign})
	in := []Tensor{{Idx: []uint16{0, 1, 2}, Val: []float32{0, 0, 0}}}
	b, err := l.Encode(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := l.Decode(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range out[0].Val {
		if v != 0 {
			t.Fatalf("decoded %v, want zeros", out[0].Val)
		}
	}
}

// corruptLayout is small enough to address bytes by hand: "w" 8×8 in four
// 4×4 chunks with k = 3, then a dense 3-vector "g". Header 20 + 2·9 = 38.
func corruptLayout(t testing.TB, f Format) (*Layout, []byte) {
	l := mustLayout(t, []TensorShape{{"w", []int{8, 8}}, {"g", []int{3}}}, Options{4, 3, f})
	ts := []Tensor{
		{Idx: []uint16{0, 5, 15, 1, 2, 3, 4, 8, 12, 7, 9, 11}, Val: []float32{1, -2, 3, 4, 5, -6, 7, 8, 9, -1, -1, 1}},
		{Val: []float32{0.5, -0.25, 2}},
	}
	b, err := l.Encode(nil, ts)
	if err != nil {
		t.Fatal(err)
	}
	return l, b
}

func TestDecodeRejectsCorruptPayloads(t *testing.T) {
	const hdr = 38
	put16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint16(b[off:], v); return b }
	}
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
	}
	set := func(off int, v byte) func([]byte) []byte {
		return func(b []byte) []byte { b[off] = v; return b }
	}
	bf16Body := hdr + 4*12 // dense values of the bf16 layout
	// version1 rewrites the payload as wire version 1 encoded it: the
	// same header and sparse tensors, the dense values as float32. It is
	// rejected by its version, not by its length or hash.
	version1 := func(b []byte) []byte {
		b[4] = 1
		out := append([]byte(nil), b[:bf16Body]...)
		for j := 0; j < 3; j++ {
			v := tensor.BF16(binary.LittleEndian.Uint16(b[bf16Body+2*j:])).Float32()
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
		return out
	}
	cases := []struct {
		name   string
		format Format
		edit   func([]byte) []byte
		want   string
	}{
		{"empty", BF16, func(b []byte) []byte { return nil }, "0 bytes, shorter than the 20-byte header"},
		{"short header", BF16, func(b []byte) []byte { return b[:30] }, "30 bytes, shorter than the 38-byte header of 2 tensors"},
		{"magic", BF16, set(0, 'X'), `magic "XCTZ", want "DCTZ"`},
		{"version", BF16, set(4, 3), "wire format version 3, want 2"},
		{"version 1", BF16, version1, "wire format version 1, want 2: every rank of a job must run a build with the same DeMo wire format"},
		{"format", BF16, set(5, byte(Sign)), "value format sign, want bf16"},
		{"unknown format", BF16, set(5, 9), "value format format(9), want bf16"},
		{"reserved", BF16, set(7, 1), "reserved header bytes are 0, 1, want 0"},
		{"hash", BF16, set(8, 0), "layout hash"},
		{"tensor count", BF16, put32(16, 3), "3 tensors, want 2"},
		{"kind", BF16, set(20, byte(Dense)), "tensor 0 (w) is dense with count 4 and k 3, want sparse with count 4 and k 3"},
		{"chunk count", BF16, put32(21, 5), "tensor 0 (w) is sparse with count 5 and k 3"},
		{"k", BF16, put32(25, 4), "tensor 0 (w) is sparse with count 4 and k 4"},
		{"dense count", BF16, put32(30, 4), "tensor 1 (g) is dense with count 4"},
		{"truncated", BF16, func(b []byte) []byte { return b[:len(b)-1] }, "91 bytes, want 92 for this layout"},
		{"trailing byte", BF16, func(b []byte) []byte { return append(b, 0) }, "93 bytes, want 92"},
		{"index out of range", BF16, put16(hdr+2, 16), "tensor 0 (w): chunk 0: index 16 is out of range [0, 16)"},
		{"duplicate index", BF16, put16(hdr+2, 0), "chunk 0: index 0 follows 0; indices must be strictly increasing"},
		{"decreasing index", BF16, put16(hdr+12+4, 0), "chunk 1: index 0 follows 2"},
		{"bf16 NaN", BF16, put16(hdr+6, 0x7fc0), "chunk 0: value 0 is NaN"},
		{"bf16 Inf", BF16, put16(hdr+12+10, 0xff80), "chunk 1: value 2 is -Inf"},
		{"dense NaN", BF16, put16(bf16Body+2, 0x7fc0), "tensor 1 (g): value 1 is NaN"},
		{"dense Inf", BF16, put16(bf16Body, 0x7f80), "tensor 1 (g): value 0 is +Inf"},
		{"sign dense -Inf", Sign, put16(hdr+4*9+4, 0xff80), "tensor 1 (g): value 2 is -Inf"},
		{"sign scale NaN", Sign, put16(hdr+6, 0x7fc1), "chunk 0: scale is NaN, want a finite number >= +0"},
		{"sign scale negative", Sign, put16(hdr+6, 0xbf80), "chunk 0: scale is -1"},
		{"sign scale -0", Sign, put16(hdr+9+6, 0x8000), "chunk 1: scale is -0"},
		{"sign padding bits", Sign, set(hdr+8, 0x08), "chunk 0: unused sign bits are 0x01, want 0"},
		{"sign index", Sign, put16(hdr+9, 0xffff), "chunk 1: index 65535 is out of range"},
	}
	for _, c := range cases {
		l, good := corruptLayout(t, c.format)
		b := c.edit(append([]byte(nil), good...))
		_, err := l.Decode(b, nil)
		if err == nil || !errors.Is(err, ErrInvalidPayload) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want ErrInvalidPayload containing %q", c.name, err, c.want)
		}
	}
}

// Two layouts whose per-tensor counts agree (64×128 and 128×64 both have
// two chunks) are told apart by the hash.
func TestDecodeRejectsOtherLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	a := mustLayout(t, []TensorShape{{"w", []int{64, 128}}}, Options{64, 32, BF16})
	b := mustLayout(t, []TensorShape{{"w", []int{128, 64}}}, Options{64, 32, BF16})
	p, err := a.Encode(nil, randPayload(a, rng))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Decode(p, nil); err == nil || !strings.Contains(err.Error(), "layout hash") {
		t.Errorf("decoding a 64×128 payload as 128×64: error %v, want a layout hash mismatch", err)
	}
	hashes := map[uint64]string{}
	for name, l := range map[string]*Layout{
		"a":      a,
		"b":      b,
		"name":   mustLayout(t, []TensorShape{{"v", []int{64, 128}}}, Options{64, 32, BF16}),
		"k":      mustLayout(t, []TensorShape{{"w", []int{64, 128}}}, Options{64, 31, BF16}),
		"format": mustLayout(t, []TensorShape{{"w", []int{64, 128}}}, Options{64, 32, Sign}),
		"chunk":  mustLayout(t, []TensorShape{{"w", []int{64, 128}}}, Options{32, 32, BF16}),
	} {
		if other, ok := hashes[l.Hash()]; ok {
			t.Errorf("layouts %s and %s have the same hash", name, other)
		}
		hashes[l.Hash()] = name
	}
}

func TestEncodeRejects(t *testing.T) {
	l := mustLayout(t, []TensorShape{{"w", []int{8, 8}}, {"g", []int{3}}}, Options{4, 3, BF16})
	good := func() []Tensor {
		return []Tensor{
			{Idx: []uint16{0, 5, 15, 1, 2, 3, 4, 8, 12, 7, 9, 11}, Val: []float32{1, -2, 3, 4, 5, -6, 7, 8, 9, -1, -1, 1}},
			{Val: []float32{0.5, -0.25, 2}},
		}
	}
	cases := []struct {
		name string
		edit func([]Tensor) []Tensor
		want string
	}{
		{"tensor count", func(ts []Tensor) []Tensor { return ts[:1] }, "1 tensors, want 2"},
		{"short", func(ts []Tensor) []Tensor { ts[0].Val = ts[0].Val[:11]; return ts }, "tensor 0 (w): 12 indices and 11 values, want 12 each"},
		{"index range", func(ts []Tensor) []Tensor { ts[0].Idx[2] = 16; return ts }, "chunk 0: indices [0 5 16]"},
		{"index order", func(ts []Tensor) []Tensor { ts[0].Idx[4] = 1; return ts }, "chunk 1: indices [1 1 3]: want strictly increasing"},
		{"NaN", func(ts []Tensor) []Tensor { ts[0].Val[7] = float32(math.NaN()); return ts }, "chunk 2: value 1 is NaN"},
		{"bf16 overflow", func(ts []Tensor) []Tensor { ts[0].Val[0] = math.MaxFloat32; return ts }, "overflows bfloat16"},
		{"dense Inf", func(ts []Tensor) []Tensor { ts[1].Val[2] = float32(math.Inf(1)); return ts }, "tensor 1 (g): value 2 is +Inf"},
		{"dense bf16 overflow", func(ts []Tensor) []Tensor { ts[1].Val[1] = -math.MaxFloat32; return ts }, "tensor 1 (g): value 1 (-3.4028235e+38) overflows bfloat16"},
		{"dense indices", func(ts []Tensor) []Tensor { ts[1].Idx = []uint16{0}; return ts }, "dense tensor has 1 indices"},
	}
	for _, c := range cases {
		_, err := l.Encode(nil, c.edit(good()))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
}

// Dense values are rounded to the nearest bfloat16, ties to even, in both
// formats: the cases sit on and beside the midpoints of 1's neighbours
// (bfloat16 keeps 7 fraction bits, so its spacing at 1 is 2⁻⁷).
func TestDenseValuesRoundToNearestEven(t *testing.T) {
	const ulp = 1.0 / 128
	cases := []struct{ in, want float32 }{
		{1 + ulp/2, 1},                     // tie: to the even 1
		{1 + 3*ulp/2, 1 + 2*ulp},           // tie: to the even 1 + 2⁻⁶
		{1 + ulp/2 + 1.0/(1<<20), 1 + ulp}, // above the tie: up
		{-(1 + ulp/2 + 1.0/(1<<20)), -(1 + ulp)},
		{0.1, 0.10009765625}, // 0x3dcd: 0x3dcccccd rounds up
		{float32(math.Copysign(0, -1)), float32(math.Copysign(0, -1))},
		{1e-40, float32(math.Float32frombits(0x00010000))}, // subnormal: 0x000116c2 rounds down
	}
	for _, f := range []Format{BF16, Sign} {
		l := mustLayout(t, []TensorShape{{"g", []int{len(cases)}}}, Options{64, 8, f})
		in := make([]float32, len(cases))
		for j, c := range cases {
			in[j] = c.in
		}
		b, err := l.Encode(nil, []Tensor{{Val: in}})
		if err != nil {
			t.Fatal(err)
		}
		if want := l.HeaderBytes() + 2*len(cases); len(b) != want {
			t.Fatalf("%v: %d bytes, want %d", f, len(b), want)
		}
		out, err := l.Decode(b, nil)
		if err != nil {
			t.Fatal(err)
		}
		for j, c := range cases {
			if math.Float32bits(out[0].Val[j]) != math.Float32bits(c.want) {
				t.Errorf("%v: %v decoded to %v, want %v", f, c.in, out[0].Val[j], c.want)
			}
		}
	}
}

func TestNewLayoutRejects(t *testing.T) {
	cases := []struct {
		shapes []TensorShape
		o      Options
		want   string
	}{
		{[]TensorShape{{"w", []int{2, 2, 2}}}, Options{64, 32, BF16}, "tensor 0 (w) has shape [2 2 2]: only 1-D (sent dense) and 2-D (compressed)"},
		{[]TensorShape{{"w", []int{0, 2}}}, Options{64, 32, BF16}, "tensor 0 (w): shape [0 2]: every dimension must be >= 1"},
		{[]TensorShape{{"g", []int{0}}}, Options{64, 32, BF16}, "tensor 0 (g) has shape [0]"},
		{nil, Options{64, 0, BF16}, "top-k must be >= 1, got 0"},
		{nil, Options{0, 32, BF16}, "chunk side must be in [1, 256], got 0"},
		{nil, Options{64, 32, 0}, "value format format(0) is not bf16 or sign"},
	}
	for _, c := range cases {
		_, err := NewLayout(c.shapes, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewLayout(%v, %+v): error %v, want it to contain %q", c.shapes, c.o, err, c.want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range []Format{BF16, Sign} {
		if got, err := ParseFormat(f.String()); err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v", f.String(), got, err)
		}
	}
	if _, err := ParseFormat("fp8"); err == nil || !strings.Contains(err.Error(), `must be "bf16" or "sign", got "fp8"`) {
		t.Errorf("ParseFormat(fp8): %v", err)
	}
}
