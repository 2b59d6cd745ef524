package parallel

import "github.com/ternml/tern/pkg/model"

// StageParams counts the parameters a stage holds, by part.
type StageParams struct {
	Blocks int64 // transformer blocks (attention, MLP, their norms)
	Embed  int64 // input embedding rows
	Head   int64 // LM head rows
	Norm   int64 // final norm
}

// Total is the stage's parameter count.
func (s StageParams) Total() int64 { return s.Blocks + s.Embed + s.Head + s.Norm }

// Bytes is the memory the stage's parameters take with bytesPerParam bytes
// each; count weights, gradients and optimizer state together, e.g. 16 for
// float32 weights and gradients with AdamW's two float32 moments.
func (s StageParams) Bytes(bytesPerParam int64) int64 { return s.Total() * bytesPerParam }

// blockParams is one transformer block's parameter count, the same sum as
// model.Config.NumParams: q and o projections H·hd·d each, k and v
// KV·hd·d each, SwiGLU's three d·ffn matrices and two norm gains.
func blockParams(c model.Config) int64 {
	d, hd := int64(c.Dim), int64(c.HeadDim())
	return 2*d*int64(c.Heads)*hd + 2*d*int64(c.KVHeads)*hd + 3*d*int64(c.FFN) + 2*d
}

// ParamCounts counts each stage's parameters under l (padded vocabulary rows
// included: they are allocated and updated like the rest).
func ParamCounts(c model.Config, l Layout) []StageParams {
	out := make([]StageParams, len(l.Stages))
	d := int64(c.Dim)
	for i, s := range l.Stages {
		out[i] = StageParams{
			Blocks: int64(s.EndLayer-s.FirstLayer) * blockParams(c),
			Embed:  int64(s.Embed.Len()) * d,
			Head:   int64(s.Head.Len()) * d,
		}
		if s.FinalNorm {
			out[i].Norm = d
		}
	}
	return out
}

// MaxOverMean is max(v)/mean(v): 1 for a perfectly balanced split, PP when
// one stage holds everything. It is 0 for an empty or all-zero v.
func MaxOverMean(v []int64) float64 {
	var sum, hi int64
	for _, x := range v {
		sum += x
		hi = max(hi, x)
	}
	if sum == 0 {
		return 0
	}
	return float64(hi) * float64(len(v)) / float64(sum)
}

// ParamMemory is the bytes of parameters, gradients and optimizer state on
// each of pp stages of c under mode, at bytesPerParam bytes per parameter.
func ParamMemory(c model.Config, pp int, mode VocabMode, bytesPerParam int64) ([]int64, error) {
	l, err := Partition(c, pp, mode)
	if err != nil {
		return nil, err
	}
	counts := ParamCounts(c, l)
	out := make([]int64, len(counts))
	for i, s := range counts {
		out[i] = s.Bytes(bytesPerParam)
	}
	return out, nil
}
