package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// maxHeaderBytes caps the JSON header, as the reference implementation does
// (100 MB), so a corrupt length field cannot make a reader allocate
// gigabytes before it notices the file is bad.
const maxHeaderBytes = 100_000_000

// Info describes one tensor of a file. Begin and End are byte offsets into
// the data buffer, which starts at File.DataOffset.
type Info struct {
	Name       string
	DType      string
	Shape      []int
	Begin, End int64
}

// File is a validated safetensors file. Tensors are read on demand.
type File struct {
	r         io.ReaderAt
	mem       []byte // set by Parse: Read returns slices of it
	closer    io.Closer
	dataStart int64
	infos     map[string]Info
	names     []string
	meta      map[string]string
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Open opens and validates the safetensors file at path. The header is read
// and checked completely; tensor bytes stay on disk until Read. Close the
// File when done.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	sf, err := newFile(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	sf.closer = f
	return sf, nil
}

// Parse validates a whole safetensors file held in b. Tensors returned by
// Read share memory with b (no copy); do not modify b while they are in use.
func Parse(b []byte) (*File, error) {
	sf, err := newFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, err
	}
	sf.mem = b
	return sf, nil
}

func newFile(r io.ReaderAt, size int64) (*File, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, invalidf("file is %d bytes, shorter than the 8-byte header length", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	switch {
	case n < 2:
		return nil, invalidf("header length %d, must be at least 2 (\"{}\")", n)
	case n > maxHeaderBytes:
		return nil, invalidf("header length %d exceeds the %d-byte limit", n, maxHeaderBytes)
	case n > uint64(size-8):
		return nil, invalidf("header length %d exceeds the %d bytes after the length field (file truncated?)", n, size-8)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("safetensors: read header: %w", err)
	}
	dataStart := 8 + int64(n)
	infos, meta, err := parseHeader(hdr, size-dataStart)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(infos))
	for k := range infos {
		names = append(names, k)
	}
	sort.Strings(names)
	return &File{r: r, dataStart: dataStart, infos: infos, names: names, meta: meta}, nil
}

// rawInfo mirrors one header entry. Pointers tell a missing field from a zero
// one; unknown fields are ignored, as the reference reader ignores them.
type rawInfo struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func parseHeader(hdr []byte, bufLen int64) (map[string]Info, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, invalidf("header is not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, invalidf("header must be a JSON object, starts with %v", tok)
	}
	infos := make(map[string]Info)
	var meta map[string]string
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, invalidf("header is not valid JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, invalidf("header key %v is not a string", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, invalidf("header entry %q: not valid JSON: %v", name, err)
		}
		if name == metaKey {
			if seenMeta {
				return nil, nil, invalidf("header has %q twice", metaKey)
			}
			seenMeta = true
			if meta, err = parseMeta(raw); err != nil {
				return nil, nil, err
			}
			continue
		}
		if _, dup := infos[name]; dup {
			return nil, nil, invalidf("tensor %q appears twice in the header", name)
		}
		info, err := parseInfo(name, raw, bufLen)
		if err != nil {
			return nil, nil, err
		}
		infos[name] = info
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, invalidf("header is not valid JSON: %v", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, invalidf("header has trailing bytes after the JSON object: %v", err)
		}
		return nil, nil, invalidf("header has trailing data after the JSON object: %v", tok)
	}
	if err := checkCoverage(infos, bufLen); err != nil {
		return nil, nil, err
	}
	return infos, meta, nil
}

func parseMeta(raw json.RawMessage) (map[string]string, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalidf("%s must be an object of strings: %v", metaKey, err)
	}
	meta := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, invalidf("%s[%q] must be a string, got %s", metaKey, k, truncate(v))
		}
		meta[k] = s
	}
	return meta, nil
}

func truncate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

func parseInfo(name string, raw json.RawMessage, bufLen int64) (Info, error) {
	var ri rawInfo
	if err := json.Unmarshal(raw, &ri); err != nil {
		return Info{}, invalidf("tensor %q: malformed entry: %v", name, err)
	}
	switch {
	case ri.DType == nil:
		return Info{}, invalidf("tensor %q: missing \"dtype\"", name)
	case ri.Shape == nil:
		return Info{}, invalidf("tensor %q: missing \"shape\"", name)
	case ri.DataOffsets == nil:
		return Info{}, invalidf("tensor %q: missing \"data_offsets\"", name)
	}
	off := *ri.DataOffsets
	if len(off) != 2 {
		return Info{}, invalidf("tensor %q: data_offsets has %d values, want [begin, end]", name, len(off))
	}
	begin, end := off[0], off[1]
	if begin < 0 || end < begin {
		return Info{}, invalidf("tensor %q: data_offsets [%d, %d] need 0 <= begin <= end", name, begin, end)
	}
	if end > bufLen {
		return Info{}, invalidf("tensor %q: data_offsets [%d, %d] run past the %d-byte data buffer", name, begin, end, bufLen)
	}
	shape := make([]int, len(*ri.Shape))
	for i, d := range *ri.Shape {
		if d < 0 || d > math.MaxInt {
			return Info{}, invalidf("tensor %q: shape %v: dimension %d is %d, must be >= 0", name, *ri.Shape, i, d)
		}
		shape[i] = int(d)
	}
	want, err := byteSize(*ri.DType, shape)
	if err != nil {
		return Info{}, invalidf("tensor %q: %v", name, err)
	}
	if end-begin != want {
		return Info{}, invalidf("tensor %q: %s%v needs %d bytes, data_offsets [%d, %d] hold %d", name, *ri.DType, shape, want, begin, end, end-begin)
	}
	return Info{Name: name, DType: *ri.DType, Shape: shape, Begin: begin, End: end}, nil
}

// checkCoverage requires the tensors to tile the data buffer exactly: no
// overlap (two names aliasing the same bytes), no hole (bytes no tensor
// owns), no trailing bytes. The reference reader enforces the same.
func checkCoverage(infos map[string]Info, bufLen int64) error {
	spans := make([]Info, 0, len(infos))
	for _, in := range infos {
		spans = append(spans, in)
	}
	sort.Slice(spans, func(a, b int) bool {
		if spans[a].Begin != spans[b].Begin {
			return spans[a].Begin < spans[b].Begin
		}
		if spans[a].End != spans[b].End {
			return spans[a].End < spans[b].End
		}
		return spans[a].Name < spans[b].Name
	})
	var pos int64
	prev := ""
	for _, s := range spans {
		switch {
		case s.Begin < pos:
			return invalidf("tensor %q: data_offsets [%d, %d] overlap tensor %q, which ends at %d", s.Name, s.Begin, s.End, prev, pos)
		case s.Begin > pos:
			return invalidf("data buffer has a hole at bytes [%d, %d) before tensor %q", pos, s.Begin, s.Name)
		}
		if s.End > s.Begin {
			pos, prev = s.End, s.Name
		}
	}
	if pos != bufLen {
		return invalidf("data buffer is %d bytes but tensors cover only %d (trailing bytes)", bufLen, pos)
	}
	return nil
}

// Names returns the tensor names in sorted order.
func (f *File) Names() []string { return append([]string(nil), f.names...) }

// Info returns the header entry for name.
func (f *File) Info(name string) (Info, bool) {
	in, ok := f.infos[name]
	if ok {
		in.Shape = append([]int(nil), in.Shape...)
	}
	return in, ok
}

// Metadata returns a copy of the "__metadata__" map (nil if absent).
func (f *File) Metadata() map[string]string {
	if f.meta == nil {
		return nil
	}
	m := make(map[string]string, len(f.meta))
	for k, v := range f.meta {
		m[k] = v
	}
	return m
}

// DataOffset is the file offset of the data buffer (8 + header length).
func (f *File) DataOffset() int64 { return f.dataStart }

// Read returns the named tensor. For an Open'ed file the bytes are read from
// disk into a new slice; for a Parse'd one they alias the parsed buffer.
func (f *File) Read(name string) (Tensor, error) {
	in, ok := f.infos[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: no tensor %q in file", name)
	}
	t := Tensor{Name: name, DType: in.DType, Shape: append([]int(nil), in.Shape...)}
	if f.mem != nil {
		t.Data = f.mem[f.dataStart+in.Begin : f.dataStart+in.End : f.dataStart+in.End]
		return t, nil
	}
	t.Data = make([]byte, in.End-in.Begin)
	if _, err := f.r.ReadAt(t.Data, f.dataStart+in.Begin); err != nil {
		if errors.Is(err, io.EOF) {
			err = invalidf("tensor %q: file shorter than its header says (truncated after open?)", name)
		}
		return Tensor{}, fmt.Errorf("safetensors: read tensor %q: %w", name, err)
	}
	return t, nil
}

// ReadAll returns every tensor, in Names order.
func (f *File) ReadAll() ([]Tensor, error) {
	ts := make([]Tensor, 0, len(f.names))
	for _, n := range f.names {
		t, err := f.Read(n)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// Close releases the underlying file of an Open'ed File; it is a no-op for
// a Parse'd one.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer = nil
	return err
}
