package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/ternml/tern/pkg/atomicfile"
)

// headerAlign is the multiple the header length is padded to (with spaces),
// as the reference writer does, so the data buffer starts 8-byte aligned.
const headerAlign = 8

// layout orders the tensors for writing: larger element sizes first, then by
// name. With every tensor's byte size a multiple of its element size, this
// keeps each tensor aligned to its element size inside the buffer (what the
// reference writer achieves with the same kind of sort) and makes the file a
// pure function of the tensor set, whatever order the caller passed.
func layout(ts []Tensor) ([]int, error) {
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("%w: duplicate tensor name %q", ErrInvalid, t.Name)
		}
		seen[t.Name] = true
	}
	order := make([]int, len(ts))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		ta, tb := ts[order[a]], ts[order[b]]
		sa, sb := dtypeSizes[ta.DType], dtypeSizes[tb.DType]
		if sa != sb {
			return sa > sb
		}
		return ta.Name < tb.Name
	})
	return order, nil
}

// marshalString encodes s as a JSON string without HTML escaping, so names
// read back byte-for-byte the way other tools print them.
func marshalString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // encoding a string cannot fail
	buf.Truncate(buf.Len() - 1) // Encode appends a newline
}

// header returns the padded JSON header Write would emit for ts and meta, and
// the order in which the tensors' bytes follow it.
func header(ts []Tensor, meta map[string]string) ([]byte, []int, error) {
	order, err := layout(ts)
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	if len(meta) > 0 {
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		marshalString(&buf, metaKey)
		buf.WriteString(":{")
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			marshalString(&buf, k)
			buf.WriteByte(':')
			marshalString(&buf, meta[k])
		}
		buf.WriteByte('}')
	}
	var off int64
	for i, idx := range order {
		t := ts[idx]
		if i > 0 || len(meta) > 0 {
			buf.WriteByte(',')
		}
		marshalString(&buf, t.Name)
		buf.WriteString(`:{"dtype":`)
		marshalString(&buf, t.DType)
		buf.WriteString(`,"shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, "%d", d)
		}
		end := off + int64(len(t.Data))
		fmt.Fprintf(&buf, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	buf.WriteByte('}')
	for buf.Len()%headerAlign != 0 {
		buf.WriteByte(' ')
	}
	if buf.Len() > maxHeaderBytes {
		return nil, nil, fmt.Errorf("%w: header is %d bytes, more than the %d allowed", ErrInvalid, buf.Len(), maxHeaderBytes)
	}
	return buf.Bytes(), order, nil
}

// Write streams a safetensors file holding ts and meta to w. The tensors are
// validated and the header computed before the first byte is written; tensor
// bytes are then copied straight from each Tensor.Data.
func Write(w io.Writer, ts []Tensor, meta map[string]string) error {
	hdr, order, err := header(ts, meta)
	if err != nil {
		return err
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	if _, err := w.Write(n[:]); err != nil {
		return fmt.Errorf("safetensors: write header length: %w", err)
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	for _, idx := range order {
		if _, err := w.Write(ts[idx].Data); err != nil {
			return fmt.Errorf("safetensors: write tensor %q: %w", ts[idx].Name, err)
		}
	}
	return nil
}

// WriteFile writes a safetensors file at path atomically: the bytes go to a
// temporary file in the same directory, which is fsynced and renamed over
// path, and the directory is fsynced so the rename survives a crash.
func WriteFile(path string, ts []Tensor, meta map[string]string) error {
	// Validate first so a bad tensor list leaves no temporary file behind.
	if _, _, err := header(ts, meta); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error { return Write(w, ts, meta) })
}
