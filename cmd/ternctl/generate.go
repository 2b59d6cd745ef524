package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/model"
)

type generateFlags struct {
	prompt      string
	maxTokens   int
	temperature float64
	topK        int
	seed        uint64
	tokenizer   string
	output      string
}

func newGenerateCmd(e *env, cf *clusterFlags) *cobra.Command {
	var f generateFlags
	c := &cobra.Command{
		Use:   "generate SOURCE --prompt TEXT",
		Short: "Continue a prompt with a trained model",
		Long: "Continue a prompt with a trained model, on the CPU with a key/value cache.\n\n" +
			"SOURCE is a checkpoint (root or step directory), hf:DIR, a Hugging Face LLaMA\n" +
			"directory, or a cluster job's name (its spec.checkpoint.dir). The continuation streams to stdout; a tokens/s line goes to stderr\n" +
			"(-o json: one object at the end instead). --temperature 0 is greedy decoding;\n" +
			"otherwise tokens are sampled, reproducibly for a given --seed. Generation stops\n" +
			"after --max-tokens, at <|endoftext|> (BPE tokenizers), or at the model's\n" +
			"training context length.",
		Example: "  ternctl generate ckpt --prompt 'func main() {'\n" +
			"  ternctl generate ckpt --prompt 'package ' --max-tokens 200 --temperature 0.8 --top-k 40 --seed 7\n" +
			"  ternctl generate hf:my-model --prompt 'Hello' --temperature 0",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return generateRun(e, args[0], resolver(cmd, cf), &f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.prompt, "prompt", "", "text to continue")
	fl.IntVar(&f.maxTokens, "max-tokens", 128, "tokens to generate at most")
	fl.Float64Var(&f.temperature, "temperature", 1.0, "sampling temperature; 0 = greedy")
	fl.IntVar(&f.topK, "top-k", 0, "sample only among the K most likely tokens; 0 = all")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed for sampling")
	fl.StringVar(&f.tokenizer, "tokenizer", "", "tokenizer for an hf:DIR without tern_tokenizer in config.json (byte, gpt2, cl100k_base)")
	fl.StringVarP(&f.output, "output", "o", "text", "format: text or json")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	_ = c.RegisterFlagCompletionFunc("tokenizer", fixedCompletion(data.TokenizerNames()...))
	return c
}

type generateResult struct {
	Source       string  `json:"source"`
	Prompt       string  `json:"prompt"`
	PromptTokens []int32 `json:"promptTokens"`
	Text         string  `json:"text"`
	Tokens       []int32 `json:"tokens"`
	Temperature  float64 `json:"temperature"`
	TopK         int     `json:"topK"`
	Seed         uint64  `json:"seed"`
	TokensPerS   float64 `json:"tokensPerS"`
	Seconds      float64 `json:"seconds"`
}

func generateRun(e *env, src string, resolve sourceResolver, f *generateFlags) error {
	if err := outputFlag(f.output); err != nil {
		return err
	}
	if f.prompt == "" {
		return usagef("no prompt: pass --prompt TEXT")
	}
	if f.maxTokens < 0 {
		return usagef("--max-tokens %d must be >= 0", f.maxTokens)
	}
	s := model.Sampling{Temperature: f.temperature, TopK: f.topK, Seed: f.seed}
	if err := s.Validate(); err != nil {
		return usagef("%v", err)
	}
	src, err := resolve(src)
	if err != nil {
		return err
	}
	lm, err := loadModel(src, f.tokenizer, 0)
	if err != nil {
		return err
	}
	c := lm.m.Config()
	if c.Tokenizer == "" {
		return usagef("%s does not say which tokenizer its vocabulary belongs to: pass --tokenizer (%s)", src, strings.Join(data.TokenizerNames(), ", "))
	}
	tok, err := data.NewTokenizer(c.Tokenizer)
	if err != nil {
		return err
	}
	if tok.VocabSize() != c.Vocab {
		return fmt.Errorf("tokenizer %s has %d ids but the model's vocabulary is %d", c.Tokenizer, tok.VocabSize(), c.Vocab)
	}
	prompt := tok.Encode(f.prompt)
	if len(prompt) >= c.SeqLen {
		return fmt.Errorf("the prompt is %d tokens; the model's context is %d: shorten it", len(prompt), c.SeqLen)
	}
	n := f.maxTokens
	if room := c.SeqLen - len(prompt); n > room {
		fmt.Fprintf(e.stderr, "note: generating %d tokens, not %d: the model's context is %d tokens and the prompt takes %d\n", room, n, c.SeqLen, len(prompt))
		n = room
	}
	var stop []int32
	if eot, ok := tok.(interface{ EndOfText() int32 }); ok {
		stop = []int32{eot.EndOfText()}
	}
	// Stream: print the decoded text as far as it forms whole UTF-8
	// characters (a multi-byte character may take several byte tokens).
	printed := 0
	var gen []int32
	emit := func(t int32) bool {
		gen = append(gen, t)
		if f.output == "text" && !(len(stop) > 0 && t == stop[0]) {
			text := tok.Decode(gen)
			end := len(text)
			for end > printed && !utf8.ValidString(text[printed:end]) {
				end--
			}
			fmt.Fprint(e.stdout, text[printed:end])
			printed = end
		}
		return true
	}
	start := time.Now()
	out, err := lm.m.Generate(prompt, n, s, stop, emit)
	secs := time.Since(start).Seconds()
	if err != nil {
		return err
	}
	body := out
	if len(body) > 0 && len(stop) > 0 && body[len(body)-1] == stop[0] {
		body = body[:len(body)-1]
	}
	text := tok.Decode(body)
	res := generateResult{Source: src, Prompt: f.prompt, PromptTokens: prompt, Text: text, Tokens: out,
		Temperature: f.temperature, TopK: f.topK, Seed: f.seed, Seconds: secs}
	if secs > 0 {
		res.TokensPerS = float64(len(out)) / secs
	}
	if f.output == "json" {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s\n", text[min(printed, len(text)):])
	fmt.Fprintf(e.stderr, "%d tokens in %.2fs (%.1f tokens/s, prompt %d tokens)\n", len(out), secs, res.TokensPerS, len(prompt))
	return nil
}
