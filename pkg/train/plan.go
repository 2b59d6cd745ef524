package train

import (
	"fmt"
	"runtime"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/parallel"
	"github.com/ternml/tern/pkg/spec"
)

// MemoryPlan is the predicted memory of one training process for a job,
// computed from the spec alone (no model, no corpus). The first five byte
// counts use the run summary's accounting (Memory), so a finished run's
// summary can be compared line by line; the rest estimate what peak RSS adds.
type MemoryPlan struct {
	Job       string `json:"job"`
	Optimizer string `json:"optimizer"`
	Params    int64  `json:"params"`
	// Weights is 4 bytes per parameter.
	Weights int64 `json:"weights_bytes"`
	// Grads is the gradient held between steps: G for every parameter, but
	// only the r selected rows (GSel) of GRASS's projected weights.
	Grads int64 `json:"grads_bytes"`
	// OptimizerState is the optimizer's StateBytes.
	OptimizerState int64 `json:"optimizer_bytes"`
	// Activations is one microbatch's Acts plus the model's per-batch
	// buffers; with Workspace it is the summary's activations_bytes.
	Activations int64 `json:"activations_bytes"`
	// Workspace is the stage's shared backward scratch (and, under GRASS,
	// the gather scratch of the row-selected weight gradients).
	Workspace int64 `json:"workspace_bytes"`
	// Data is the tokenised corpus (training and validation) when it can be
	// estimated without tokenising; DataSource says how, "unknown" when not.
	Data       int64  `json:"data_bytes"`
	DataSource string `json:"data_source"`
	// Transient is what exists only during some steps but stays in the peak:
	// GRASS's full gradients at selection steps.
	Transient int64 `json:"transient_bytes"`
	// OptimizerTransient is working memory the optimizer holds only during
	// some steps (optim.PlanTransientBytes): GaLore's float64 SVD buffers
	// at projection refreshes, one set per goroutine refreshing at once,
	// for GOMAXPROCS goroutines as in the planning process.
	OptimizerTransient int64 `json:"optimizer_transient_bytes"`
	// Runtime is the process overhead (RuntimeBytes): the Go runtime and
	// binary, the tokenizer's tables and the GEMM packing panels.
	Runtime int64 `json:"runtime_bytes"`
	// Total is the predicted peak RSS: the sum of the lines above, for a
	// corpus already in the token cache.
	Total int64 `json:"total_bytes"`
	// TokeniseMax bounds what a run adds to Total when it has to tokenise
	// the corpus first (no cache yet): the unsplit token stream, garbage
	// once training and validation are copied out, and one batch of text
	// (pkg/data reads 16 MiB at a time). 0 for a token file or an unknown
	// corpus. Measured on the demo job (small preset, Go source tree, 86
	// MiB of tokens): +39 MiB cold against a bound of 102 MiB.
	TokeniseMax int64 `json:"tokenise_max_bytes"`

	// ExchangeSent and ExchangeRecv are the payload bytes one worker sends
	// and receives for the gradient exchange of a step with
	// spec.parallel.data replicas (the most over workers), counted as the
	// collectives count them: the bucketed ring all-reduce of the held
	// gradients, or DeMo's all-gather. GRASS's figure is for steps between
	// row selections; a selection step exchanges full gradients. 0 for one
	// replica.
	ExchangeSent int64 `json:"exchange_sent_bytes"`
	ExchangeRecv int64 `json:"exchange_recv_bytes"`
	// Workers is spec.parallel.data; Exchange names what is exchanged.
	Workers  int    `json:"workers"`
	Exchange string `json:"exchange"`

	// Stages, for a pipeline-parallel job, is each stage's plan in brief;
	// the byte counts above are then those of the stage with the largest
	// total, the worker that needs the most memory.
	Stages []StagePlan `json:"stages,omitempty"`
	Stage  int         `json:"stage"` // the stage the lines above describe
}

// StagePlan is one pipeline stage's share of a plan.
type StagePlan struct {
	Params      int64 `json:"params"`
	Weights     int64 `json:"weights_bytes"`
	Optimizer   int64 `json:"optimizer_bytes"`
	Activations int64 `json:"activations_bytes"` // with the workspace
	InFlight    int   `json:"in_flight"`         // microbatches whose activations it holds at once
	Total       int64 `json:"total_bytes"`
}

// Lines lists the plan's byte counts in display order with their names.
func (p *MemoryPlan) Lines() []PlanLine {
	return []PlanLine{
		{"weights", p.Weights}, {"gradients", p.Grads}, {"optimizer", p.OptimizerState},
		{"activations", p.Activations}, {"workspace", p.Workspace}, {"data", p.Data},
		{"transient", p.Transient}, {"optimizer transient", p.OptimizerTransient},
		{"runtime", p.Runtime}, {"total", p.Total},
	}
}

// PlanLine is one named byte count of a plan.
type PlanLine struct {
	Name  string
	Bytes int64
}

// Plan predicts the memory of one process training job, from the spec alone.
func Plan(job *spec.TrainingJob) (*MemoryPlan, error) {
	s := &job.Spec
	cfg, err := s.Model.Resolve()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spec.%w", err)
	}
	b, t := s.Batch.MicroBatchSize, cfg.SeqLen
	if b <= 0 {
		return nil, fmt.Errorf("spec.batch.microBatchSize must be > 0, got %d", b)
	}
	pc := planConfigs(&s.Optimizer, cfg)
	var p *MemoryPlan
	if s.Parallel.Pipeline <= 1 {
		stage := model.FullStage(cfg)
		stage.Recompute = s.Model.Recompute
		if p, err = planStage(s, cfg, stage, ModelParamShapes(cfg), pc, 1, 0); err != nil {
			return nil, err
		}
	} else {
		mode := parallel.VocabNaive
		if s.Parallel.VocabParallel {
			mode = parallel.VocabParallel
		}
		layout, err := parallel.Partition(cfg, s.Parallel.Pipeline, mode)
		if err != nil {
			return nil, fmt.Errorf("spec.parallel: %w", err)
		}
		scfg := cfg
		scfg.Vocab = layout.PaddedVocab
		m := s.Batch.MicroBatches
		for i, st := range layout.Stages {
			st.Recompute = s.Model.Recompute
			inFlight := m // GPipe: every microbatch's forward before any backward
			if s.Parallel.Schedule != parallel.ScheduleGPipe {
				inFlight = min(len(layout.Stages)-i, m) // 1F1B
			}
			sp, err := planStage(s, scfg, st, StageParamShapes(scfg, st), pc, inFlight, m)
			if err != nil {
				return nil, err
			}
			sp.Total = sp.Weights + sp.Grads + sp.OptimizerState + sp.Activations + sp.Workspace + sp.Transient + sp.OptimizerTransient
			summary := StagePlan{Params: sp.Params, Weights: sp.Weights, Optimizer: sp.OptimizerState,
				Activations: sp.Activations + sp.Workspace, InFlight: inFlight, Total: sp.Total}
			if p == nil || sp.Total > p.Total {
				stages := []StagePlan(nil)
				if p != nil {
					stages = p.Stages
				}
				p = sp
				p.Stage, p.Stages = i, stages
			}
			p.Stages = append(p.Stages, summary)
		}
	}
	p.Job, p.Optimizer = job.Metadata.Name, s.Optimizer.Name
	p.Workers, p.Exchange = max(s.Parallel.Data, 1), exchangeName(s)
	p.Data, p.DataSource = estimateData(&s.Data, cfg)
	if p.DataSource == DataFromFiles || p.DataSource == DataFromText {
		p.TokeniseMax = p.Data + tokeniseBatchBytes
	}
	p.Runtime = RuntimeBytes(cfg, b, t)
	p.Total = p.Weights + p.Grads + p.OptimizerState + p.Activations + p.Workspace + p.Data + p.Transient + p.OptimizerTransient + p.Runtime
	return p, nil
}

// planStage plans one worker holding stage of the model (parameters of
// shapes). inFlight > 0 with m > 0 is a pipeline stage: inFlight
// microbatches' activations at once and every microbatch's boundary buffers
// (pipeline.activationBytes); m == 0 is the single-process model.
func planStage(s *spec.JobSpec, cfg model.Config, stage model.StageSpec, shapes []optim.ParamShape, pc optim.PlanConfigs, inFlight, m int) (*MemoryPlan, error) {
	b, t := s.Batch.MicroBatchSize, cfg.SeqLen
	name := s.Optimizer.Name
	state, err := optim.PlanStateBytes(name, shapes, pc)
	if err != nil {
		return nil, fmt.Errorf("spec.optimizer.name: %w", err)
	}
	grads := optim.PlanGradElems(name, shapes, pc)
	acts, ws := model.StageActivationBytes(cfg, stage, b, t)
	if name == "grass" {
		ws += 4 * int64(b*t) * int64(grassMaxRows(shapes, pc.Grass.Rank))
	}
	sent, recv, packed, err := planExchange(s, shapes, pc)
	if err != nil {
		return nil, err
	}
	if packed {
		ws += 4 * bucketElems // syncGrads' bucket
	}
	var params int64
	for _, sh := range shapes {
		params += int64(sh.Size())
	}
	activations := acts + modelBufferBytes(cfg, b, t)
	if m > 0 {
		n := int64(b * t)
		activations = int64(inFlight)*acts + int64(m)*(4*(7*n*int64(cfg.Dim)+2*n)+8*n)
	}
	return &MemoryPlan{
		ExchangeSent: sent, ExchangeRecv: recv, Params: params,
		Weights: 4 * params, Grads: 4 * grads.Steady, OptimizerState: state,
		Activations: activations, Workspace: ws,
		Transient:          4 * grads.Selection,
		OptimizerTransient: optim.PlanTransientBytes(name, shapes, pc, runtime.GOMAXPROCS(0)),
	}, nil
}

// StageParamShapes lists the parameters a stage of spec holds, in
// Stage.Params order: its embedding rows, its blocks, the final norm, its
// head rows.
func StageParamShapes(c model.Config, spec model.StageSpec) []optim.ParamShape {
	all := ModelParamShapes(c)
	var out []optim.ParamShape
	for _, sh := range all {
		switch {
		case sh.Role == model.RoleEmbedding:
			if spec.Embed.Len() > 0 {
				sh.Shape = []int{spec.Embed.Len(), c.Dim}
				out = append(out, sh)
			}
		case sh.Role == model.RoleHead:
			if spec.Head.Len() > 0 {
				sh.Shape = []int{spec.Head.Len(), c.Dim}
				out = append(out, sh)
			}
		case sh.Name == "model.norm.weight":
			if spec.FinalNorm {
				out = append(out, sh)
			}
		default:
			var l int
			if _, err := fmt.Sscanf(sh.Name, "model.layers.%d.", &l); err == nil && l >= spec.FirstLayer && l < spec.EndLayer {
				out = append(out, sh)
			}
		}
	}
	return out
}

// planConfigs resolves the optimizer configurations as newOptimizer does
// (seeds do not change sizes and are left out).
func planConfigs(o *spec.OptimizerSpec, cfg model.Config) optim.PlanConfigs {
	pc := optim.PlanConfigs{AdamW: o.AdamWConfig()}
	switch o.Name {
	case "adafactor":
		pc.Adafactor = o.AdafactorConfig()
	case "came":
		pc.CAME = o.CAMEConfig()
	case "adam-mini":
		pc.AdamMini = o.AdamMiniConfig().ForModel(cfg)
	case "galore":
		pc.GaLore = o.GaLoreConfig()
	case "apollo", "apollo-mini":
		pc.Apollo = o.ApolloConfig()
	case "microadam":
		pc.MicroAdam = o.MicroAdamConfig()
	case "grass":
		pc.Grass = o.GrassConfig()
	case "demo":
		pc.Demo = o.DemoConfig()
	}
	return pc
}

// exchangeName says in words what the replicas exchange.
func exchangeName(s *spec.JobSpec) string {
	switch {
	case s.Optimizer.Name == "demo":
		c := s.Optimizer.DemoConfig()
		return fmt.Sprintf("DeMo: top-%d DCT coefficients per %dx%d chunk, %s values, all-gathered", c.TopK, c.Chunk, c.Chunk, c.Values)
	case s.Communication.Exchange == "none":
		return "none"
	case s.Optimizer.Name == "grass":
		return s.Communication.Exchange + " ring all-reduce of GRASS's selected rows and the unprojected gradients, between selections"
	}
	return s.Communication.Exchange + " ring all-reduce of the gradients"
}

// planExchange counts one step's gradient-exchange payload per worker.
// packed reports whether small gradients are packed into syncGrads'
// bucket, which is then allocated.
func planExchange(s *spec.JobSpec, shapes []optim.ParamShape, pc optim.PlanConfigs) (sent, recv int64, packed bool, err error) {
	w := s.Parallel.Data
	if w <= 1 {
		return 0, 0, false, nil
	}
	if s.Optimizer.Name == "demo" {
		t, err := optim.DemoPayloadBytes(shapes, pc.Demo)
		if err != nil {
			return 0, 0, false, fmt.Errorf("spec.optimizer.demo: %w", err)
		}
		sizes := make([]int, w)
		for i := range sizes {
			sizes[i] = int(t)
		}
		for r := range w {
			c := comm.AllGatherCost(sizes, r, 0)
			sent, recv = max(sent, c.SentBytes), max(recv, c.RecvBytes)
		}
		return sent, recv, false, nil
	}
	if s.Communication.Exchange == "none" {
		return 0, 0, false, nil
	}
	wire := comm.WireFloat32
	if s.Communication.Exchange == "bf16" {
		wire = comm.WireBF16
	}
	sizes := make([]int, len(shapes))
	for i, sh := range shapes {
		sizes[i] = sh.Size()
		if s.Optimizer.Name == "grass" && optim.ProjectedShape(sh) {
			sizes[i] = min(pc.Grass.Rank, sh.Shape[0]) * sh.Shape[1]
		}
	}
	bs := buckets(sizes)
	for _, b := range bs {
		packed = packed || sizes[b[0]] < bucketElems
	}
	for r := range w {
		var rs, rr int64
		for _, b := range bs {
			n := 0
			for _, i := range b {
				n += sizes[i]
			}
			c := comm.AllReduceCost(n, w, r, wire, 0)
			rs, rr = rs+c.SentBytes, rr+c.RecvBytes
		}
		sent, recv = max(sent, rs), max(recv, rr)
	}
	return sent, recv, packed, nil
}

// grassMaxRows is the largest number of selected rows of any projected
// weight: the width of the gather scratch the row-selected backward grows.
func grassMaxRows(shapes []optim.ParamShape, rank int) int {
	proj, _ := optim.SplitProjectedShapes(shapes)
	r := 0
	for _, s := range proj {
		r = max(r, min(rank, s.Shape[0]))
	}
	return r
}

// modelBufferBytes are model.Model's own per-batch buffers (embedding output,
// head-input gradient, per-token max and sum): 4·(2·N·D + 2·N) for N = B·T.
// The test checks it against Model.ActivationBytes.
func modelBufferBytes(c model.Config, b, t int) int64 {
	n := int64(b * t)
	return 4 * (2*n*int64(c.Dim) + 2*n)
}

// ModelParamShapes lists the parameters model.New(c, ...) builds, in the
// same order with the same names, roles and shapes, without allocating them
// (it mirrors model.NewStage for model.FullStage; a test keeps the two equal).
func ModelParamShapes(c model.Config) []optim.ParamShape {
	d, hd, f := c.Dim, c.HeadDim(), c.FFN
	out := []optim.ParamShape{{Name: "model.embed_tokens.weight", Role: model.RoleEmbedding, Shape: []int{c.Vocab, d}}}
	for l := 0; l < c.Layers; l++ {
		pre := fmt.Sprintf("model.layers.%d.", l)
		out = append(out,
			optim.ParamShape{Name: pre + "input_layernorm.weight", Role: model.RoleNorm, Shape: []int{d}},
			optim.ParamShape{Name: pre + "self_attn.q_proj.weight", Role: model.RoleAttnQK, Shape: []int{c.Heads * hd, d}},
			optim.ParamShape{Name: pre + "self_attn.k_proj.weight", Role: model.RoleAttnQK, Shape: []int{c.KVHeads * hd, d}},
			optim.ParamShape{Name: pre + "self_attn.v_proj.weight", Role: model.RoleAttnV, Shape: []int{c.KVHeads * hd, d}},
			optim.ParamShape{Name: pre + "self_attn.o_proj.weight", Role: model.RoleAttnO, Shape: []int{d, c.Heads * hd}},
			optim.ParamShape{Name: pre + "post_attention_layernorm.weight", Role: model.RoleNorm, Shape: []int{d}},
			optim.ParamShape{Name: pre + "mlp.gate_proj.weight", Role: model.RoleMLP, Shape: []int{f, d}},
			optim.ParamShape{Name: pre + "mlp.up_proj.weight", Role: model.RoleMLP, Shape: []int{f, d}},
			optim.ParamShape{Name: pre + "mlp.down_proj.weight", Role: model.RoleMLP, Shape: []int{d, f}},
		)
	}
	return append(out,
		optim.ParamShape{Name: "model.norm.weight", Role: model.RoleNorm, Shape: []int{d}},
		optim.ParamShape{Name: "lm_head.weight", Role: model.RoleHead, Shape: []int{c.Vocab, d}},
	)
}
