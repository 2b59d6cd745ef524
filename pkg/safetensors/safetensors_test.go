package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// sample returns tensors of several dtypes, including a scalar and an empty
// one, so layout, alignment and zero-length spans are all exercised.
func sample() []Tensor {
	i64 := make([]byte, 3*8)
	for i := range 3 {
		binary.LittleEndian.PutUint64(i64[8*i:], uint64(-int64(i)-1))
	}
	return []Tensor{
		F32("model.layers.0.self_attn.q_proj.weight", []int{2, 3}, []float32{1, -2, 3.5, float32(math.Inf(1)), 0, float32(math.Copysign(0, -1))}),
		BF16("model.norm.weight", []int{3}, []float32{1, 0.5, -3}),
		{Name: "step", DType: DTypeI64, Shape: []int{3}, Data: i64},
		{Name: "flag", DType: DTypeBool, Shape: []int{}, Data: []byte{1}},
		F32("empty", []int{0, 4}, nil),
		{Name: "bytes<&>", DType: DTypeU8, Shape: []int{5}, Data: []byte{1, 2, 3, 4, 5}},
	}
}

func encode(t *testing.T, ts []Tensor, meta map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, ts, meta); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes()
}

func checkSame(t *testing.T, f *File, want []Tensor, meta map[string]string) {
	t.Helper()
	if len(f.Names()) != len(want) {
		t.Fatalf("file has %d tensors %v, want %d", len(f.Names()), f.Names(), len(want))
	}
	for _, w := range want {
		got, err := f.Read(w.Name)
		if err != nil {
			t.Fatalf("Read(%q): %v", w.Name, err)
		}
		if got.DType != w.DType || !slices.Equal(got.Shape, w.Shape) || !bytes.Equal(got.Data, w.Data) {
			t.Errorf("tensor %q: got %s%v %x, want %s%v %x", w.Name, got.DType, got.Shape, got.Data, w.DType, w.Shape, w.Data)
		}
	}
	if !reflect.DeepEqual(f.Metadata(), meta) {
		t.Errorf("metadata %v, want %v", f.Metadata(), meta)
	}
}

func TestRoundTrip(t *testing.T) {
	ts := sample()
	meta := map[string]string{"format": "pt", "tern.step": "42", "quote\"d": "a\nb"}
	b := encode(t, ts, meta)

	f, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checkSame(t, f, ts, meta)

	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteFile(path, ts, meta); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, b) {
		t.Fatalf("WriteFile bytes differ from Write bytes")
	}
	of, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer of.Close()
	checkSame(t, of, ts, meta)
}

func TestWriteIsOrderIndependentAndAligned(t *testing.T) {
	ts := sample()
	a := encode(t, ts, nil)
	rev := make([]Tensor, len(ts))
	for i := range ts {
		rev[len(ts)-1-i] = ts[i]
	}
	if b := encode(t, rev, nil); !bytes.Equal(a, b) {
		t.Fatalf("output depends on input order")
	}
	n := binary.LittleEndian.Uint64(a)
	if (8+n)%headerAlign != 0 {
		t.Fatalf("data buffer starts at %d, not %d-byte aligned", 8+n, headerAlign)
	}
	f, err := Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range f.Names() {
		in, _ := f.Info(name)
		size, _ := DTypeSize(in.DType)
		if in.Begin%int64(size) != 0 {
			t.Errorf("tensor %q (%s) starts at %d, not aligned to %d", name, in.DType, in.Begin, size)
		}
	}
}

// TestKnownBytes checks interoperability against a file assembled by hand
// from the format description (no writer involved): the two-by-two I32
// tensor example used by the reference implementation's own tests, whose
// header is unpadded, plus a padded variant with metadata.
func TestKnownBytes(t *testing.T) {
	hdr := `{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}`
	file := append([]byte{byte(len(hdr)), 0, 0, 0, 0, 0, 0, 0}, hdr...)
	file = append(file, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff)
	f, err := Parse(file)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	in, ok := f.Info("test")
	if !ok || in.DType != "I32" || !reflect.DeepEqual(in.Shape, []int{2, 2}) || in.Begin != 0 || in.End != 16 {
		t.Fatalf("Info = %+v, %v", in, ok)
	}
	got, _ := f.Read("test")
	var vals []int32
	for i := 0; i < 4; i++ {
		vals = append(vals, int32(binary.LittleEndian.Uint32(got.Data[4*i:])))
	}
	if !reflect.DeepEqual(vals, []int32{1, 2, 3, -1}) {
		t.Fatalf("values %v", vals)
	}

	// Our writer must emit the same JSON, padded with spaces to 8 bytes.
	out := encode(t, []Tensor{got}, nil)
	wantHdr := hdr + strings.Repeat(" ", (8-len(hdr)%8)%8)
	if n := binary.LittleEndian.Uint64(out); int(n) != len(wantHdr) || string(out[8:8+n]) != wantHdr {
		t.Fatalf("writer header %q, want %q", out[8:8+n], wantHdr)
	}

	hdr2 := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}   `
	file2 := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr2)))
	file2 = append(file2, hdr2...)
	file2 = append(file2, 0x00, 0x3c, 0x01, 0x00) // 1.0 and the smallest subnormal
	f2, err := Parse(file2)
	if err != nil {
		t.Fatalf("Parse padded: %v", err)
	}
	a, _ := f2.Read("a")
	v, err := a.Float32s()
	if err != nil || v[0] != 1 || v[1] != float32(math.Ldexp(1, -24)) {
		t.Fatalf("F16 values %v, %v", v, err)
	}
	if f2.Metadata()["format"] != "pt" {
		t.Fatalf("metadata %v", f2.Metadata())
	}
}

// raw builds a file from a literal header and data buffer.
func raw(hdr string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	return append(append(b, hdr...), data...)
}

func TestDamaged(t *testing.T) {
	good := encode(t, sample(), map[string]string{"format": "pt"})
	hdrLen := int(binary.LittleEndian.Uint64(good))
	withLen := func(n uint64) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint64(b, n)
		return b
	}
	const one = `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	d8 := make([]byte, 8)
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "shorter than the 8-byte header length"},
		{"truncated in length field", good[:5], "shorter than the 8-byte header length"},
		{"truncated in header", good[:8+hdrLen/2], "exceeds the"},
		{"truncated in data", good[:len(good)-3], "run past the"},
		{"truncated at data start", good[:8+hdrLen], "run past the"},
		{"trailing bytes", append(append([]byte(nil), good...), 0), "trailing bytes"},
		{"header length huge", withLen(1 << 62), "exceeds the 100000000-byte limit"},
		{"header length zero", withLen(0), "must be at least 2"},
		{"header length past file", withLen(uint64(len(good))), "file truncated?"},
		{"bad JSON", raw(`{"a":{"dtype":`, d8), "not valid JSON"},
		{"not an object", raw(`[1,2]   `, nil), "must be a JSON object"},
		{"trailing JSON", raw(`{} {}`, nil), "trailing data"},
		{"unknown dtype", raw(`{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}`, d8), `tensor "a": unknown dtype "F12"`},
		{"missing dtype", raw(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, d8), `tensor "a": missing "dtype"`},
		{"missing shape", raw(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, d8), `tensor "a": missing "shape"`},
		{"missing offsets", raw(`{"a":{"dtype":"F32","shape":[2]}}`, d8), `tensor "a": missing "data_offsets"`},
		{"negative dim", raw(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, d8), `tensor "a": shape [-2]: dimension 0 is -2`},
		{"fractional dim", raw(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}`, d8), `tensor "a": malformed entry`},
		{"shape overflow", raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, d8), "overflows int64"},
		{"shape/offset mismatch", raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, d8), `tensor "a": F32[3] needs 12 bytes`},
		{"offsets reversed", raw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, d8), "need 0 <= begin <= end"},
		{"offsets three", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}`, d8), "data_offsets has 3 values"},
		{"offset out of range", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, d8), `tensor "a": data_offsets [4, 12] run past the 8-byte data buffer`},
		{"overlap", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), `tensor "b": data_offsets [4, 8] overlap tensor "a"`},
		{"hole", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}`, d8), "hole at bytes [4, 8)"},
		{"hole at start", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), `hole at bytes [0, 4) before tensor "a"`},
		{"duplicate name", raw(one+`,"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, d8), `tensor "a" appears twice`},
		{"metadata not strings", raw(`{"__metadata__":{"k":1}}`, nil), `__metadata__["k"] must be a string`},
		{"metadata not object", raw(`{"__metadata__":[1]}`, nil), "__metadata__ must be an object"},
		{"metadata twice", raw(`{"__metadata__":{},"__metadata__":{}}`, nil), "__metadata__\" twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.file)
			if err == nil {
				t.Fatalf("Parse accepted a damaged file")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			// Open must agree with Parse.
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := os.WriteFile(path, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			if f, err := Open(path); err == nil {
				f.Close()
				t.Fatalf("Open accepted a damaged file")
			} else if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open error %q does not contain %q", err, c.want)
			}
		})
	}
}

func TestWriteRejects(t *testing.T) {
	cases := []struct {
		name string
		ts   []Tensor
		want string
	}{
		{"duplicate", []Tensor{F32("a", []int{1}, []float32{1}), F32("a", []int{1}, []float32{2})}, `duplicate tensor name "a"`},
		{"short data", []Tensor{F32("a", []int{2}, []float32{1})}, `tensor "a": F32[2] needs 8 bytes, data has 4`},
		{"unknown dtype", []Tensor{{Name: "a", DType: "F4", Shape: []int{1}, Data: []byte{0}}}, `tensor "a": unknown dtype "F4"`},
		{"reserved name", []Tensor{F32(metaKey, nil, []float32{1})}, "reserved"},
		{"negative dim", []Tensor{{Name: "a", DType: DTypeU8, Shape: []int{-1}}}, "must be >= 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, c.ts, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Write error %v, want one containing %q", err, c.want)
			}
			if buf.Len() != 0 {
				t.Fatalf("Write emitted %d bytes before failing", buf.Len())
			}
			dir := t.TempDir()
			if err := WriteFile(filepath.Join(dir, "x.safetensors"), c.ts, nil); err == nil {
				t.Fatal("WriteFile accepted invalid tensors")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("WriteFile left %d files behind", len(ents))
			}
		})
	}
}

func TestWriteFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	for i := range 2 {
		ts := []Tensor{F32("x", []int{1}, []float32{float32(i)})}
		if err := WriteFile(path, ts, nil); err != nil {
			t.Fatal(err)
		}
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, f, ts, nil)
		f.Close()
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the file", len(ents))
	}
}

func TestFloat32s(t *testing.T) {
	in := []float32{1, -2.5, 1e-40, float32(math.Inf(-1)), 3.14159265}
	got, err := F32("x", []int{5}, in).Float32s()
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("F32 round trip %v, %v", got, err)
	}
	// BF16 rounding to nearest even, checked on bit patterns:
	// 1+2^-8 is a tie between 1 and 1+2^-7: even mantissa wins (1).
	// 1+3·2^-8 ties between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
	// 1+2^-8+2^-20 is above the tie: rounds up.
	cases := []struct{ in, want float32 }{
		{1 + 1.0/256, 1},
		{1 + 3.0/256, 1 + 1.0/64},
		{1 + 1.0/256 + 1.0/(1<<20), 1 + 1.0/128},
		{-2, -2},
		{float32(math.Inf(1)), float32(math.Inf(1))},
	}
	for _, c := range cases {
		v, err := BF16("b", []int{1}, []float32{c.in}).Float32s()
		if err != nil || v[0] != c.want {
			t.Errorf("bf16(%v) = %v (%v), want %v", c.in, v, err, c.want)
		}
	}
	nan, _ := BF16("n", []int{1}, []float32{float32(math.NaN())}).Float32s()
	if !math.IsNaN(float64(nan[0])) {
		t.Errorf("bf16(NaN) = %v", nan[0])
	}
	if _, err := (Tensor{Name: "i", DType: DTypeI32, Data: make([]byte, 4)}).Float32s(); err == nil {
		t.Error("Float32s converted an I32 tensor")
	}
}

func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	_ = Write(&buf, sample(), map[string]string{"format": "pt"})
	good := buf.Bytes()
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:8])
	f.Add(raw(`{}`, nil))
	f.Add(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add(raw(`{"__metadata__":{"k":1}}`, nil))
	flipped := append([]byte(nil), good...)
	flipped[20] ^= 0x40
	f.Add(flipped)
	f.Fuzz(func(t *testing.T, b []byte) {
		pf, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// Whatever Parse accepts must read back whole and survive a
		// write/parse round trip unchanged.
		ts, err := pf.ReadAll()
		if err != nil {
			t.Fatalf("ReadAll after successful Parse: %v", err)
		}
		var out bytes.Buffer
		if err := Write(&out, ts, pf.Metadata()); err != nil {
			t.Fatalf("rewrite of parsed tensors: %v", err)
		}
		again, err := Parse(out.Bytes())
		if err != nil {
			t.Fatalf("parse of rewritten file: %v", err)
		}
		checkSame(t, again, ts, pf.Metadata())
	})
}
