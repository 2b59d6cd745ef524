package train

import (
	"context"
	"fmt"
	"io"

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/hf"
	"github.com/ternml/tern/pkg/spec"
)

// applyInit replaces the seeded initial weights with spec.model.init's when
// it names a Hugging Face directory. Every rank reads the directory itself
// and keeps its own rows (its stage's blocks, its vocabulary shard), so
// replicas start identical without an exchange. A resumed job never calls
// it: the checkpoint's weights win.
func (r *runner) applyInit() error {
	dir, ok := r.job.Spec.Model.Init.HFDir()
	if !ok {
		return nil
	}
	if err := hf.Import(dir, r.cfg, r.params); err != nil {
		return fmt.Errorf("spec.model.init: %w", err)
	}
	return nil
}

// HeldOut loads job's corpus as training would and returns a sampler over
// its validation split (spec.data.valFraction), for evaluating a trained
// model outside the job. progress receives data-loading progress; nil means
// none.
func HeldOut(ctx context.Context, job *spec.TrainingJob, progress io.Writer) (*data.Sampler, error) {
	s := &job.Spec
	cfg, err := s.Model.Resolve()
	if err != nil {
		return nil, err
	}
	tok, err := data.NewTokenizer(cfg.Tokenizer)
	if err != nil {
		return nil, fmt.Errorf("spec.data.tokenizer: %w", err)
	}
	src := s.Data.Source()
	src.SeqLen = cfg.SeqLen
	if s.Data.Kind == "text" {
		if src, err = inlineSource(src, s.Data.Text); err != nil {
			return nil, err
		}
	}
	ds, err := data.Load(ctx, src, tok, progress)
	if err != nil {
		return nil, err
	}
	if ds.Val.Len() == 0 {
		return nil, fmt.Errorf("the job has no validation split (spec.data.valFraction is %g); nothing is held out to evaluate on", s.Data.ValFraction)
	}
	sm, err := data.NewSampler(ds.Val, cfg.SeqLen, s.Seed)
	if err != nil {
		return nil, fmt.Errorf("validation data: %w", err)
	}
	return sm, nil
}
