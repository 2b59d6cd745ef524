package parallel

import (
	"fmt"

	"github.com/ternml/tern/pkg/model"
)

// VocabMode says where the vocabulary layers (input embedding, LM head and
// loss) live.
type VocabMode string

// Vocabulary placements.
const (
	// VocabParallel splits the rows of both the input embedding and the LM
	// head evenly over all stages (Vocabulary Parallelism, Yeung et al.,
	// "Balancing Pipeline Parallelism with Vocabulary Parallelism",
	// MLSys 2025), so every stage does 1/PP of the vocabulary work.
	VocabParallel VocabMode = "parallel"
	// VocabNaive keeps the whole embedding on the first stage and the whole
	// LM head and loss on the last, as plain pipeline parallelism does.
	VocabNaive VocabMode = "naive"
	// VocabNone schedules the transformer blocks only. It exists for
	// simulating schedules in isolation; a model cannot train with it.
	VocabNone VocabMode = "none"
)

// Layout is how a model is cut into pipeline stages.
type Layout struct {
	Mode VocabMode
	// Vocab is the model's vocabulary; PaddedVocab the rows of the
	// embedding and head tensors actually held: under VocabParallel the
	// next multiple of the stage count, so every stage holds the same
	// number of rows. The padded rows are ordinary classes that no target
	// names; build the stages with model.Config.Vocab = PaddedVocab.
	Vocab, PaddedVocab int
	// Stages[i] is what stage i holds, in the model's terms. Embed and
	// Head are row ranges of the padded vocabulary.
	Stages []model.StageSpec
}

// PadVocab rounds vocab up to a multiple of stages.
func PadVocab(vocab, stages int) int {
	return (vocab + stages - 1) / stages * stages
}

// Partition cuts cfg into pp stages.
//
// Blocks are split as evenly as possible; when pp does not divide the layer
// count, the last stages take one block more. Under 1F1B stage i keeps
// activations of up to pp−i microbatches (more on stage 0 with vocabulary
// parallelism), so putting the extra blocks late keeps the peak activation
// memory, which stage 0 sets, as low as it can be. Both vocabulary modes cut
// the blocks the same way, so comparing them measures the vocabulary
// placement alone. The last stage applies the final norm.
func Partition(cfg model.Config, pp int, mode VocabMode) (Layout, error) {
	if pp < 1 {
		return Layout{}, fmt.Errorf("partition: pipeline size must be at least 1, got %d", pp)
	}
	if cfg.Layers < 1 || cfg.Vocab < 1 {
		return Layout{}, fmt.Errorf("partition: model needs at least one layer and one vocabulary row, got layers=%d vocab=%d", cfg.Layers, cfg.Vocab)
	}
	if pp > cfg.Layers {
		return Layout{}, fmt.Errorf("partition: pipeline size %d exceeds the model's %d layers; every stage needs at least one block, so use at most %d stages", pp, cfg.Layers, cfg.Layers)
	}
	l := Layout{Mode: mode, Vocab: cfg.Vocab, PaddedVocab: cfg.Vocab, Stages: make([]model.StageSpec, pp)}
	switch mode {
	case VocabParallel:
		if cfg.Vocab < pp {
			return Layout{}, fmt.Errorf("partition: vocabulary %d is smaller than the pipeline size %d; vocabulary parallelism gives every stage at least one row", cfg.Vocab, pp)
		}
		l.PaddedVocab = PadVocab(cfg.Vocab, pp)
	case VocabNaive:
	default:
		return Layout{}, fmt.Errorf("partition: vocabulary mode %q not allowed (allowed: %s, %s)", mode, VocabParallel, VocabNaive)
	}
	q, r := cfg.Layers/pp, cfg.Layers%pp
	first := 0
	for i := range l.Stages {
		n := q
		if i >= pp-r {
			n++
		}
		s := model.StageSpec{FirstLayer: first, EndLayer: first + n, FinalNorm: i == pp-1}
		first += n
		if mode == VocabParallel {
			rows := l.PaddedVocab / pp
			s.Embed = model.RowRange{Lo: i * rows, Hi: (i + 1) * rows}
			s.Head = s.Embed
		} else {
			if i == 0 {
				s.Embed = model.RowRange{Lo: 0, Hi: cfg.Vocab}
			}
			if i == pp-1 {
				s.Head = model.RowRange{Lo: 0, Hi: cfg.Vocab}
			}
		}
		l.Stages[i] = s
	}
	return l, nil
}
