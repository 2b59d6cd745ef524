package hf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"

	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/ternml/tern/pkg/model"
)

type namedFile struct {
	name string
	data []byte
}

// tokenizerExport is what the export knows about the model's tokenizer:
// special ids and the Hugging Face files it can write.
type tokenizerExport struct {
	name     string
	bos, eos int // -1: none
	files    []namedFile
	note     string // README paragraph on how to tokenize for this model
}

const (
	gpt2EOT   = 50256  // <|endoftext|> in r50k_base / GPT-2
	cl100kEOT = 100257 // <|endoftext|> in cl100k_base
	eotText   = "<|endoftext|>"
	// r50kFile is the key under which tiktoken-go-loader embeds GPT-2's
	// ranks (the base name of OpenAI's published file).
	r50kFile = "r50k_base.tiktoken"
)

func tokenizerFiles(c model.Config) (tokenizerExport, error) {
	switch c.Tokenizer {
	case "gpt2", "r50k_base":
		files, err := gpt2Files(c.SeqLen)
		if err != nil {
			return tokenizerExport{}, err
		}
		return tokenizerExport{name: "gpt2", bos: gpt2EOT, eos: gpt2EOT, files: files,
			note: "The tokenizer is GPT-2's byte-level BPE (vocab.json, merges.txt), so " +
				"`AutoTokenizer.from_pretrained(DIR)` loads it as a GPT2Tokenizer. " +
				"<|endoftext|> (50256) separates documents and serves as BOS and EOS.\n"}, nil
	case "cl100k_base":
		return tokenizerExport{name: "cl100k_base", bos: cl100kEOT, eos: cl100kEOT,
			note: "The tokenizer is tiktoken's cl100k_base (GPT-4's BPE). Its pre-tokenizer " +
				"regex is not GPT-2's, so no vocab.json/merges.txt pair reproduces it; tokenize with " +
				"`tiktoken.get_encoding(\"cl100k_base\")`. <|endoftext|> (100257) separates documents.\n"}, nil
	case "byte", "":
		return tokenizerExport{name: "byte", bos: -1, eos: -1,
			note: "The tokenizer is tern's byte tokenizer: token id = byte value (256 ids), no " +
				"merges, no special tokens. Hugging Face has no tokenizer class for it, so none is " +
				"written; encode with `list(text.encode(\"utf-8\"))` and decode with " +
				"`bytes(ids).decode(\"utf-8\", errors=\"replace\")`. Documents were separated by a blank line.\n"}, nil
	}
	return tokenizerExport{}, fmt.Errorf("export: unknown tokenizer %q (allowed: byte, gpt2, cl100k_base)", c.Tokenizer)
}

// byteToUnicode is GPT-2's reversible map from bytes to printable runes
// (bytes_to_unicode in openai/gpt-2 encoder.py): printable Latin-1 bytes map
// to themselves, the others to 256, 257, ... in byte order.
func byteToUnicode() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

func toUnicode(tab *[256]rune, b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = tab[c]
	}
	return string(r)
}

// gpt2Files derives vocab.json and merges.txt from the r50k_base ranks
// embedded in the binary. A token of rank r is the merge of the two parts
// that byte-pair encoding with only the merges ranked below r leaves of its
// bytes (the inverse of the construction; tiktoken's own converters use the
// same rule), and merges.txt lists those pairs in rank order.
func gpt2Files(seqLen int) ([]namedFile, error) {
	ranks, err := tiktoken_loader.NewOfflineLoader().LoadTiktokenBpe(r50kFile)
	if err != nil {
		return nil, fmt.Errorf("export: GPT-2 ranks: %w", err)
	}
	type tok struct {
		b    string
		rank int
	}
	toks := make([]tok, 0, len(ranks))
	for b, r := range ranks {
		toks = append(toks, tok{b, r})
	}
	sort.Slice(toks, func(i, j int) bool { return toks[i].rank < toks[j].rank })
	tab := byteToUnicode()
	vocab := make(map[string]int, len(toks)+1)
	var merges bytes.Buffer
	merges.WriteString("#version: 0.2\n")
	for _, t := range toks {
		vocab[toUnicode(&tab, []byte(t.b))] = t.rank
		if len(t.b) < 2 {
			continue
		}
		parts := bpeParts([]byte(t.b), ranks, t.rank)
		if len(parts) != 2 {
			return nil, fmt.Errorf("export: GPT-2 token %q (rank %d) does not split into one merge (%d parts)", t.b, t.rank, len(parts))
		}
		fmt.Fprintf(&merges, "%s %s\n", toUnicode(&tab, parts[0]), toUnicode(&tab, parts[1]))
	}
	vocab[eotText] = gpt2EOT
	vj, err := json.Marshal(vocab)
	if err != nil {
		return nil, err
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"tokenizer_class": "GPT2Tokenizer", "model_max_length": seqLen, "add_prefix_space": false,
		"bos_token": eotText, "eos_token": eotText, "unk_token": eotText, "clean_up_tokenization_spaces": false,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	special, err := json.MarshalIndent(map[string]string{"bos_token": eotText, "eos_token": eotText, "unk_token": eotText}, "", "  ")
	if err != nil {
		return nil, err
	}
	return []namedFile{
		{"vocab.json", vj},
		{"merges.txt", merges.Bytes()},
		{"tokenizer_config.json", append(cfg, '\n')},
		{"special_tokens_map.json", append(special, '\n')},
	}, nil
}

// bpeParts runs byte-pair encoding on b using only merges ranked below
// maxRank: repeatedly join the adjacent pair whose join has the lowest rank.
func bpeParts(b []byte, ranks map[string]int, maxRank int) [][]byte {
	parts := make([][]byte, len(b))
	for i := range b {
		parts[i] = b[i : i+1]
	}
	for len(parts) > 1 {
		best, at := maxRank, -1
		for i := 0; i+1 < len(parts); i++ {
			r, ok := ranks[string(parts[i])+string(parts[i+1])]
			if ok && r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		joined := append(append([]byte(nil), parts[at]...), parts[at+1]...)
		parts = append(parts[:at], append([][]byte{joined}, parts[at+2:]...)...)
	}
	return parts
}
