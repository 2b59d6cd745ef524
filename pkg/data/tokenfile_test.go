package data

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTokenFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, vocab := range []int{7, 256, 257, 50257, 65536, 65537, 100277} {
		ids := make([]int32, 1000)
		for i := range ids {
			ids[i] = int32((i * 7919) % vocab)
		}
		ids[len(ids)-1] = int32(vocab - 1)
		tk, err := NewTokens(ids, vocab)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "t.tok")
		if err := WriteTokenFile(p, tk); err != nil {
			t.Fatal(err)
		}
		got, err := ReadTokenFile(p)
		if err != nil {
			t.Fatalf("vocab %d: %v", vocab, err)
		}
		if got.Vocab() != vocab || !slices.Equal(got.Ints(), ids) {
			t.Fatalf("vocab %d: round trip mismatch", vocab)
		}
		fi, _ := os.Stat(p)
		if want := int64(tokenFileHeaderSize + len(ids)*TokenWidth(vocab)); fi.Size() != want {
			t.Fatalf("vocab %d: file size %d, want %d", vocab, fi.Size(), want)
		}
	}
	if _, err := NewTokens([]int32{1, 300}, 256); err == nil || !strings.Contains(err.Error(), "token 1 (id 300)") {
		t.Fatalf("NewTokens with id >= vocab: %v", err)
	}
}

// rawTokenFile builds a file by hand, without the CRC, as another tool would.
func rawTokenFile(magic string, version, width int, vocab uint32, count uint64, payload []byte) []byte {
	h := make([]byte, tokenFileHeaderSize)
	copy(h, magic)
	binary.LittleEndian.PutUint16(h[8:], uint16(version))
	binary.LittleEndian.PutUint16(h[10:], uint16(width))
	binary.LittleEndian.PutUint32(h[12:], vocab)
	binary.LittleEndian.PutUint64(h[16:], count)
	return append(h, payload...)
}

func TestTokenFileCorruption(t *testing.T) {
	u16 := func(v ...uint16) []byte {
		var b []byte
		for _, x := range v {
			b = binary.LittleEndian.AppendUint16(b, x)
		}
		return b
	}
	good, _ := NewTokens([]int32{1, 2, 3, 4}, 1000)
	var valid strings.Builder
	if err := EncodeTokenFile(&valid, good); err != nil {
		t.Fatal(err)
	}
	flipped := []byte(valid.String())
	flipped[len(flipped)-1] ^= 1

	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "truncated header"},
		{"short header", []byte("TERNTOKS\x01"), "truncated header"},
		{"bad magic", rawTokenFile("NOTTOKEN", 1, 2, 1000, 2, u16(1, 2)), "bad magic"},
		{"bad version", rawTokenFile(tokenFileMagic, 9, 2, 1000, 2, u16(1, 2)), "unsupported version 9"},
		{"bad width", rawTokenFile(tokenFileMagic, 1, 3, 1000, 2, u16(1, 2)), "bytes per token 3"},
		{"vocab too wide", rawTokenFile(tokenFileMagic, 1, 1, 1000, 2, []byte{1, 2}), "does not fit"},
		{"truncated tokens", rawTokenFile(tokenFileMagic, 1, 2, 1000, 5, u16(1, 2)), "truncated: header says 5 tokens"},
		{"count mismatch", rawTokenFile(tokenFileMagic, 1, 2, 1000, 1, u16(1, 2)), "count mismatch"},
		{"id >= vocab", rawTokenFile(tokenFileMagic, 1, 2, 1000, 3, u16(1, 1000, 2)), "token 1 has id 1000 >= vocab size 1000"},
		{"crc", flipped, "checksum mismatch"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".tok")
			if err := os.WriteFile(p, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadTokenFile(p)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrCorruptTokenFile) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q: want ErrCorruptTokenFile naming %s and containing %q", err, p, c.want)
			}
		})
	}
	// A file without CRC (flag clear) is accepted.
	p := filepath.Join(dir, "nocrc.tok")
	os.WriteFile(p, rawTokenFile(tokenFileMagic, 1, 2, 1000, 2, u16(7, 999)), 0o644)
	tk, err := ReadTokenFile(p)
	if err != nil || !slices.Equal(tk.Ints(), []int32{7, 999}) {
		t.Fatalf("file without CRC: %v %v", tk.Ints(), err)
	}
}

// FuzzDecodeTokenFile checks that no input makes the reader panic and that
// whatever it accepts re-encodes to the same bytes when a CRC was recorded.
func FuzzDecodeTokenFile(f *testing.F) {
	good, _ := NewTokens([]int32{1, 2, 3, 999}, 1000)
	var b strings.Builder
	EncodeTokenFile(&b, good)
	f.Add([]byte(b.String()))
	f.Add(rawTokenFile(tokenFileMagic, 1, 4, 1<<31-1, 1, []byte{0xff, 0xff, 0xff, 0xff}))
	f.Add(rawTokenFile(tokenFileMagic, 1, 1, 256, 2, []byte{0, 255}))
	f.Fuzz(func(t *testing.T, in []byte) {
		tk, err := DecodeTokenFile(in)
		if err != nil {
			return
		}
		for i := 0; i < tk.Len(); i++ {
			if id := tk.At(i); id < 0 || int(id) >= tk.Vocab() {
				t.Fatalf("accepted id %d at %d with vocab %d", id, i, tk.Vocab())
			}
		}
		if binary.LittleEndian.Uint32(in[24:])&tokenFileFlagCRC != 0 {
			var out strings.Builder
			EncodeTokenFile(&out, tk)
			if out.String() != string(in) {
				t.Fatal("re-encoding an accepted file changed it")
			}
		}
	})
}
