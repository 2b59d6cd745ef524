package data

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestNewTokenizerNames(t *testing.T) {
	cases := []struct {
		name  string
		vocab int
		canon string
	}{
		{"byte", 256, "byte"},
		{"gpt2", 50257, "gpt2"},
		{"r50k_base", 50257, "gpt2"},
		{"cl100k_base", 100277, "cl100k_base"},
	}
	for _, c := range cases {
		tok, err := NewTokenizer(c.name)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if tok.VocabSize() != c.vocab || tok.Name() != c.canon {
			t.Errorf("%s: got name %q vocab %d, want %q %d", c.name, tok.Name(), tok.VocabSize(), c.canon, c.vocab)
		}
	}
	_, err := NewTokenizer("sentencepiece")
	if err == nil || !strings.Contains(err.Error(), "allowed: byte, gpt2, r50k_base, cl100k_base") {
		t.Fatalf("unknown tokenizer error = %v, want one listing the allowed names", err)
	}
}

func TestKnownEncodings(t *testing.T) {
	// Reference ids from OpenAI's tiktoken (Python): enc.encode(text).
	cases := []struct {
		tok, text string
		want      []int32
	}{
		{"gpt2", "Hello world", []int32{15496, 995}},
		{"gpt2", "hello world", []int32{31373, 995}},
		{"cl100k_base", "hello world", []int32{15339, 1917}},
		{"cl100k_base", "Hello world", []int32{9906, 1917}},
		{"byte", "Hi\n", []int32{72, 105, 10}},
	}
	for _, c := range cases {
		tok, err := NewTokenizer(c.tok)
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Encode(c.text); !slices.Equal(got, c.want) {
			t.Errorf("%s.Encode(%q) = %v, want %v", c.tok, c.text, got, c.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	texts := []string{
		"The quick brown fox jumps over the lazy dog.",
		"naïve café, Größe, 日本語のテキスト, emoji 🐦🔥, Ελληνικά",
		"func main() {\n\tfmt.Println(\"hi\")\n\tfor i := 0; i < 10; i++ {\n\t\tx[i] <<= 2 // shift\n\t}\n}\n",
		"literal special text <|endoftext|> stays text",
		"",
	}
	for _, name := range []string{"byte", "gpt2", "cl100k_base"} {
		tok, err := NewTokenizer(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range texts {
			ids := tok.Encode(s)
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("%s: id %d out of vocab", name, id)
				}
			}
			if got := tok.Decode(ids); got != s {
				t.Errorf("%s round trip of %q gave %q", name, s, got)
			}
		}
	}
}

func TestSpecialTextIsOrdinary(t *testing.T) {
	tok, _ := NewTokenizer("gpt2")
	ids := tok.Encode("<|endoftext|>")
	if slices.Contains(ids, 50256) {
		t.Fatalf("text <|endoftext|> encoded as the special id: %v", ids)
	}
	if sep := DocSeparator(tok); !slices.Equal(sep, []int32{50256}) {
		t.Fatalf("gpt2 separator %v, want [50256]", sep)
	}
	if sep := DocSeparator(ByteTokenizer{}); !slices.Equal(sep, []int32{'\n'}) {
		t.Fatalf("byte separator %v, want [10]", sep)
	}
}

func TestByteRoundTripArbitrary(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 4096)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	var tok ByteTokenizer
	if got := tok.Decode(tok.Encode(string(b))); got != string(b) {
		t.Fatal("byte tokenizer does not round-trip arbitrary bytes")
	}
	if got := tok.Decode([]int32{65, 300, -1, 66}); got != "A\uFFFD\uFFFDB" {
		t.Fatalf("Decode of out-of-range ids = %q", got)
	}
}
