package data

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// Tokenizer turns text into token ids and back. Implementations are safe for
// concurrent use.
type Tokenizer interface {
	Name() string
	VocabSize() int // every id Encode returns is < VocabSize
	Encode(text string) []int32
	Decode(ids []int32) string
}

// Tokenizer names accepted by NewTokenizer.
const (
	TokenizerByte   = "byte"        // 256 ids, one per byte; lossless on any input
	TokenizerGPT2   = "gpt2"        // GPT-2's byte-level BPE (tiktoken r50k_base), 50257 ids
	TokenizerR50k   = "r50k_base"   // alias of gpt2
	TokenizerCL100k = "cl100k_base" // GPT-4's BPE, 100277 ids
)

// TokenizerNames lists the names NewTokenizer accepts, for error messages and
// shell completion.
func TokenizerNames() []string {
	return []string{TokenizerByte, TokenizerGPT2, TokenizerR50k, TokenizerCL100k}
}

// The BPE ranks ship inside the binary (tiktoken-go-loader embeds them), so a
// worker never reaches the network to build a tokenizer. The loader is set
// once, before the first BPE tokenizer is built.
var setLoaderOnce sync.Once

var (
	bpeMu    sync.Mutex
	bpeCache = map[string]*bpeTokenizer{}
)

// NewTokenizer returns the tokenizer called name (see TokenizerNames).
func NewTokenizer(name string) (Tokenizer, error) {
	switch name {
	case TokenizerByte:
		return ByteTokenizer{}, nil
	case TokenizerGPT2, TokenizerR50k:
		return loadBPE(TokenizerGPT2, tiktoken.MODEL_R50K_BASE, 50257)
	case TokenizerCL100k:
		// The highest special id of cl100k_base is <|endofprompt|> = 100276.
		return loadBPE(TokenizerCL100k, tiktoken.MODEL_CL100K_BASE, 100277)
	}
	return nil, fmt.Errorf("unknown tokenizer %q (allowed: %s)", name, strings.Join(TokenizerNames(), ", "))
}

// loadBPE builds (once per process) the tiktoken encoding; building parses
// ~1-2 MB of embedded ranks, which is worth sharing.
func loadBPE(name, encoding string, vocab int) (*bpeTokenizer, error) {
	setLoaderOnce.Do(func() { tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader()) })
	bpeMu.Lock()
	defer bpeMu.Unlock()
	if t, ok := bpeCache[name]; ok {
		return t, nil
	}
	enc, err := tiktoken.GetEncoding(encoding)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: load BPE ranks: %w", name, err)
	}
	eot := enc.Encode(tiktoken.ENDOFTEXT, []string{tiktoken.ENDOFTEXT}, nil)
	if len(eot) != 1 || eot[0] >= vocab {
		return nil, fmt.Errorf("tokenizer %s: unexpected <|endoftext|> encoding %v", name, eot)
	}
	t := &bpeTokenizer{name: name, vocab: vocab, enc: enc, eot: int32(eot[0])}
	bpeCache[name] = t
	return t, nil
}

// ByteTokenizer maps every byte to its value: 256 ids, no merges, no special
// tokens. It round-trips arbitrary bytes, valid UTF-8 or not.
type ByteTokenizer struct{}

func (ByteTokenizer) Name() string   { return TokenizerByte }
func (ByteTokenizer) VocabSize() int { return 256 }

func (ByteTokenizer) Encode(text string) []int32 {
	ids := make([]int32, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = int32(text[i])
	}
	return ids
}

// Decode writes ids outside [0,256) as U+FFFD so that a model's bad output
// stays printable instead of failing.
func (ByteTokenizer) Decode(ids []int32) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id > 255 {
			b = utf8.AppendRune(b, utf8.RuneError)
			continue
		}
		b = append(b, byte(id))
	}
	return string(b)
}

// bpeTokenizer wraps a tiktoken encoding. Encode treats special-token text
// such as "<|endoftext|>" in the input as ordinary text: corpus files are
// data, and only the loader inserts separators.
type bpeTokenizer struct {
	name  string
	vocab int
	enc   *tiktoken.Tiktoken
	eot   int32
}

func (t *bpeTokenizer) Name() string   { return t.name }
func (t *bpeTokenizer) VocabSize() int { return t.vocab }

// EndOfText is the id of <|endoftext|> (50256 for gpt2, 100257 for
// cl100k_base).
func (t *bpeTokenizer) EndOfText() int32 { return t.eot }

func (t *bpeTokenizer) Encode(text string) []int32 {
	raw := t.enc.EncodeOrdinary(text)
	ids := make([]int32, len(raw))
	for i, v := range raw {
		ids[i] = int32(v)
	}
	return ids
}

func (t *bpeTokenizer) Decode(ids []int32) string {
	var sb strings.Builder
	run := make([]int, 0, len(ids))
	flush := func() {
		if len(run) > 0 {
			sb.WriteString(t.enc.Decode(run))
			run = run[:0]
		}
	}
	for _, id := range ids {
		if id < 0 || int(id) >= t.vocab {
			flush()
			sb.WriteRune(utf8.RuneError)
			continue
		}
		run = append(run, int(id))
	}
	flush()
	return sb.String()
}

// DocSeparator returns the ids placed after every document when documents are
// concatenated into one stream. BPE tokenizers use their <|endoftext|> token,
// as GPT-2 was trained. The byte tokenizer has no spare id, so it uses a
// single '\n': source files already end in a newline, which makes the
// boundary a blank line, as between declarations. Other tokenizers get no
// separator unless they have an EndOfText() int32 method.
func DocSeparator(tok Tokenizer) []int32 {
	if e, ok := tok.(interface{ EndOfText() int32 }); ok {
		return []int32{e.EndOfText()}
	}
	if tok.Name() == TokenizerByte {
		return []int32{'\n'}
	}
	return nil
}
