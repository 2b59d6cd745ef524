package spec

import (
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
)

// APIVersion and Kind are the only values a TrainingJob document may carry in
// its apiVersion and kind fields.
const (
	APIVersion = "tern/v1"
	Kind       = "TrainingJob"
)

// The struct tags below are the field reference: `json` is the field name,
// `default` the value filled when the document leaves the field out (a JSON
// literal; "derived" means computed from other fields, explained in desc),
// and `desc` the one-line description `ternctl explain` prints. Closed value
// sets live in the enums table.

// TrainingJob is one training run.
type TrainingJob struct {
	APIVersion string   `json:"apiVersion" desc:"Schema version of this document; must be tern/v1."`
	Kind       string   `json:"kind" desc:"Type of this document; must be TrainingJob."`
	Metadata   Metadata `json:"metadata" desc:"Identity of the job."`
	Spec       JobSpec  `json:"spec" desc:"What to train, on what data, and how."`
}

// Metadata identifies a job.
type Metadata struct {
	Name string `json:"name" desc:"Job name: lowercase letters, digits, '-' and '.', at most 63 characters, starting and ending with a letter or digit."`
}

// JobSpec is the desired run.
type JobSpec struct {
	Seed          uint64            `json:"seed" default:"1" desc:"Seed for parameter initialisation and data sampling; same seed and spec give bitwise-identical runs."`
	Steps         int               `json:"steps" default:"600" desc:"Number of optimizer steps to run."`
	Model         ModelSpec         `json:"model" desc:"Model architecture: a preset and/or explicit sizes (explicit fields override the preset)."`
	Data          DataSpec          `json:"data" desc:"Training corpus, tokenizer and validation split."`
	Batch         BatchSpec         `json:"batch" desc:"Sequences per optimizer step."`
	Optimizer     OptimizerSpec     `json:"optimizer" desc:"Optimizer, learning-rate schedule, weight decay and gradient clipping."`
	Eval          EvalSpec          `json:"eval" desc:"Periodic evaluation on the validation split."`
	Checkpoint    CheckpointSpec    `json:"checkpoint" desc:"Durable checkpoints on disk."`
	Parallel      ParallelSpec      `json:"parallel" desc:"How the job is laid out over ranks (processes)."`
	Communication CommunicationSpec `json:"communication" desc:"How ranks exchange gradients, and how long they wait for each other."`
	Snapshot      *SnapshotSpec     `json:"snapshot,omitempty" desc:"In-memory snapshots: a local copy every step and Reed-Solomon fragments on peers, so a job resumes after a crash or a lost worker without disk. Absent: the defaults."`

	RestartPolicy *RestartPolicySpec `json:"restartPolicy,omitempty" desc:"What the coordinator does when a rank fails: relaunch the job from its latest checkpoint, up to maxRestarts times. Absent: the defaults."`
	Device        *DeviceSpec        `json:"device,omitempty" desc:"Where each rank computes: the CPU (the default) or a CUDA GPU, and the GPU's matrix-product precision. Absent: the CPU."`
}

// Reserved is a section that later versions of the schema will define. It
// parses as any mapping so that the error can say "reserved" rather than
// "unknown field", and Validate accepts it only empty.
type Reserved map[string]any

// ModelSpec chooses the architecture. Resolve turns it into a model.Config.
type ModelSpec struct {
	Preset    string  `json:"preset,omitempty" desc:"Named architecture to start from; explicit fields below override it."`
	Vocab     int     `json:"vocab,omitempty" default:"derived" desc:"Vocabulary size; must equal the tokenizer's (byte 256, gpt2 50257, cl100k_base 100277). Default: from the preset, else from the tokenizer."`
	Dim       int     `json:"dim,omitempty" desc:"Model width (embedding size). Required without a preset."`
	Layers    int     `json:"layers,omitempty" desc:"Number of transformer blocks. Required without a preset."`
	Heads     int     `json:"heads,omitempty" desc:"Attention (query) heads; dim/heads must be even (RoPE). Required without a preset."`
	KVHeads   int     `json:"kvHeads,omitempty" default:"derived" desc:"Key/value heads for grouped-query attention; heads must be a multiple. Default: from the preset, else heads."`
	FFN       int     `json:"ffn,omitempty" desc:"SwiGLU hidden width. Required without a preset."`
	SeqLen    int     `json:"seqLen,omitempty" desc:"Training context length in tokens. Required without a preset."`
	RopeTheta float64 `json:"ropeTheta,omitempty" default:"10000" desc:"RoPE base frequency."`
	NormEps   float64 `json:"normEps,omitempty" default:"1e-5" desc:"RMSNorm epsilon."`
	Tokenizer string  `json:"tokenizer,omitempty" default:"derived" desc:"Tokenizer the vocabulary belongs to. Default: from the preset, else spec.data.tokenizer, else byte."`
	Recompute bool    `json:"recompute,omitempty" default:"false" desc:"Recompute each block's activations in backward instead of storing them (less memory, about a third more compute)."`

	Init InitSource `json:"init,omitempty" desc:"Initial weights: empty for the seeded random initialisation, or hf:DIR to start from a Hugging Face LLaMA directory (config.json + safetensors; bf16/fp16 widened to float32) that must match this model exactly. A relative DIR in a job file is relative to that file (one given with --set, to the working directory)."`
}

// DataSpec chooses the corpus.
type DataSpec struct {
	Kind        string   `json:"kind" default:"\"dir\"" desc:"Corpus format: dir (text files under path), tokens (pre-tokenized file), jsonl (one {\"text\": ...} per line), text (the inline text field)."`
	Path        string   `json:"path" default:"\"\"" desc:"File or directory to read; a relative path in a job file is relative to that file (one given with --set, to the working directory). For kind dir, a directory (files matching include, recursively) or a single file; empty means the Go standard library sources ($GOROOT/src), present on every machine with Go."`
	Include     []string `json:"include" default:"derived" desc:"For kinds dir and jsonl: glob patterns a file must match; without '/' a pattern matches the base name, with '/' the path relative to path, ** spanning directories. Default: [\"*.go\"] for dir, [\"*.jsonl\"] for jsonl."`
	Exclude     []string `json:"exclude" default:"[]" desc:"For kinds dir and jsonl: glob patterns (same syntax as include) that drop a file even if it is included."`
	Text        string   `json:"text,omitempty" desc:"For kind text: the corpus itself."`
	Tokenizer   string   `json:"tokenizer" default:"derived" desc:"Tokenizer for the corpus. Default: the model's tokenizer (spec.model.tokenizer or the preset's), else byte."`
	ValFraction float64  `json:"valFraction" default:"0.01" desc:"Fraction of the corpus held out for evaluation, in [0, 0.5]; 0 means no validation split."`
	CacheDir    string   `json:"cacheDir" default:"\"\"" desc:"Directory for the tokenized corpus cache; empty means the user cache directory."`
}

// BatchSpec sizes one optimizer step: MicroBatchSize*MicroBatches sequences
// of model.seqLen tokens.
type BatchSpec struct {
	MicroBatchSize int `json:"microBatchSize" default:"8" desc:"Sequences per forward/backward pass."`
	MicroBatches   int `json:"microBatches" default:"1" desc:"Forward/backward passes accumulated per optimizer step."`
}

// OptimizerSpec chooses the update rule and its schedule. The fields up to
// eps are shared by every optimizer that has the concept; each optimizer's
// own hyperparameters sit in the section named after it, which may be set
// only when it is the chosen one (optimizer.go has the rules).
type OptimizerSpec struct {
	Name        string  `json:"name" default:"\"adamw\"" desc:"Update rule: adamw (Loshchilov & Hutter 2019, decoupled weight decay), adafactor (Shazeer & Stern 2018, factored second moment), came (Luo et al. 2023, confidence-guided Adafactor), adam-mini (Zhang et al. 2024, one second moment per block), galore (Zhao et al. 2024, Adam in a low-rank gradient subspace), apollo and apollo-mini (Zhu et al. 2024, Adam statistics in a random low-rank space that rescale the full gradient), microadam (Modoranu et al. 2024, Adam over a window of sparse gradients), grass (Muhamed et al. 2024, Adam on r selected rows of each weight gradient, never forming the rest). galore, apollo, apollo-mini and grass update the 2-D attention and MLP weights; the embedding, head and norms take AdamW (Hugging Face convention, as in their reference code) with the shared betas, eps and weightDecay."`
	LR          float64 `json:"lr" default:"3e-3" desc:"Peak learning rate, reached at the end of warmup. Every optimizer uses it, except adafactor with adafactor.relativeStep."`
	MinLR       float64 `json:"minLR" default:"derived" desc:"Learning rate at the last step for the cosine and linear schedules. Default: lr/10."`
	WarmupSteps int     `json:"warmupSteps" default:"50" desc:"Steps of linear warmup from 0 to lr."`
	Schedule    string  `json:"schedule" default:"\"cosine\"" desc:"Learning-rate decay after warmup, from lr to minLR."`
	WeightDecay float64 `json:"weightDecay" default:"derived" desc:"Decoupled weight decay coefficient, >= 0, applied by every optimizer to matrices only (not to norms)."`
	ClipNorm    float64 `json:"clipNorm" default:"1.0" desc:"Clip the global gradient L2 norm to this value before every optimizer's step; 0 turns clipping off."`
	Beta1       float64 `json:"beta1" default:"derived" desc:"First-moment decay, in [0, 1); used by every optimizer but one (adafactor: 0 means no first moment). Not used by demo (its momentum decay is demo.decay)."`
	Beta2       float64 `json:"beta2" default:"derived" desc:"Second-moment decay, in [0, 1). Not used by adafactor (its decay follows adafactor.decayRate) and demo (no second moment)."`
	Eps         float64 `json:"eps" default:"derived" desc:"Term added to the second-moment root for numerical stability, > 0. Not used by adafactor and came (their eps1 and eps2) and demo (no second moment)."`

	Adafactor  *AdafactorSpec `json:"adafactor,omitempty" desc:"Adafactor's own settings (Hugging Face transformers' Adafactor arguments); only with name adafactor."`
	CAME       *CAMESpec      `json:"came,omitempty" desc:"CAME's own settings (reference code yangluo7/CAME); only with name came."`
	AdamMini   *AdamMiniSpec  `json:"adam-mini,omitempty" desc:"Adam-mini's partition (reference code zyushun/Adam-mini); only with name adam-mini. The head size comes from the model."`
	GaLore     *GaLoreSpec    `json:"galore,omitempty" desc:"GaLore's projection settings (reference code jiaweizzhao/GaLore); only with name galore."`
	Apollo     *ApolloSpec    `json:"apollo,omitempty" desc:"APOLLO's projection and scaling settings (reference code zhuhanqing/APOLLO); only with name apollo."`
	ApolloMini *ApolloSpec    `json:"apollo-mini,omitempty" desc:"APOLLO-Mini's settings: the fields of apollo, with APOLLO-Mini's reference defaults (a rank-1 projection, tensor-wise scaling); only with name apollo-mini."`
	MicroAdam  *MicroAdamSpec `json:"microadam,omitempty" desc:"MicroAdam's window and compression settings (reference code IST-DASLab/ISTA-DASLab-Optimizers); only with name microadam."`
	Grass      *GrassSpec     `json:"grass,omitempty" desc:"GRASS's row-selection settings (Muhamed et al. 2024; no public reference code); only with name grass."`
	Demo       *DemoSpec      `json:"demo,omitempty" desc:"DeMo's compression settings (reference code bloc97/DeMo); only with name demo."`
}

// The optimizer sections below take their defaults ("reference") from the
// matching pkg/optim Default*Config, field by Go name, so the numbers are
// written once, in pkg/optim.

// AdafactorSpec is spec.optimizer.adafactor.
type AdafactorSpec struct {
	Eps1           float64 `json:"eps1" default:"reference" desc:"Added to g² before averaging, > 0 (HF eps[0]); keeps an all-zero gradient row finite."`
	Eps2           float64 `json:"eps2" default:"reference" desc:"Floor of the parameter RMS that scales the step when scaleParameter is on, >= 0 (HF eps[1])."`
	ClipThreshold  float64 `json:"clipThreshold" default:"reference" desc:"Update clipping threshold d, > 0: the update is divided by max(1, RMS(update)/d)."`
	DecayRate      float64 `json:"decayRate" default:"reference" desc:"Exponent c of the second-moment decay 1 - t^c, in [-1, 0]."`
	RelativeStep   bool    `json:"relativeStep" default:"reference" desc:"Use the relative step min(1e-2, 1/sqrt(t)) instead of lr and its schedule."`
	ScaleParameter bool    `json:"scaleParameter" default:"reference" desc:"Multiply the step by max(eps2, RMS of the parameter)."`
	WarmupInit     bool    `json:"warmupInit" default:"reference" desc:"With relativeStep: grow the relative step linearly from 1e-6 (needs relativeStep: true)."`
}

// CAMESpec is spec.optimizer.came.
type CAMESpec struct {
	Beta3         float64 `json:"beta3" default:"reference" desc:"Decay of the factored confidence (instability) statistics, in [0, 1)."`
	Eps1          float64 `json:"eps1" default:"reference" desc:"Added to g² before averaging, > 0."`
	Eps2          float64 `json:"eps2" default:"reference" desc:"Added to the instability (u - m)², > 0."`
	ClipThreshold float64 `json:"clipThreshold" default:"reference" desc:"Update clipping threshold d, > 0: the update is divided by max(1, RMS(update)/d)."`
}

// AdamMiniSpec is spec.optimizer.adam-mini.
type AdamMiniSpec struct {
	Partition string `json:"partition" default:"reference" desc:"Which parameters share one second moment, as in a release of the reference code: v1.1 (releases 1.1.0-1.1.1, the current one) one per attention head for query and key, one per row for the embedding, head, value, attention output and MLP, one per norm; v1.0 (releases up to 1.0.4) AdamW (one per element) for the embedding and head, one per head for query and key, one per whole tensor for everything else."`
}

// GaLoreSpec is spec.optimizer.galore.
type GaLoreSpec struct {
	Rank          int     `json:"rank" default:"reference" desc:"Rank r of the gradient projection, >= 1; capped at min(rows, cols) of each weight."`
	UpdateProjGap int     `json:"updateProjGap" default:"reference" desc:"Steps between SVD refreshes of the projection, >= 1."`
	Scale         float64 `json:"scale" default:"reference" desc:"Multiplier alpha of the projected-back update, > 0."`
	ProjType      string  `json:"projType" default:"reference" desc:"Which side of each weight is compressed: std the smaller (the reference default), reverse_std the larger."`
}

// ApolloSpec is spec.optimizer.apollo and spec.optimizer.apollo-mini. The
// projections derive from spec.seed.
type ApolloSpec struct {
	Rank          int     `json:"rank" default:"reference" desc:"Rank r of the random projection, >= 1; capped at min(rows, cols) of each weight."`
	UpdateProjGap int     `json:"updateProjGap" default:"reference" desc:"Steps between new random projections, >= 1."`
	Scale         float64 `json:"scale" default:"reference" desc:"The reference's scale argument, > 0: the update is multiplied by sqrt(scale)."`
	ScaleType     string  `json:"scaleType" default:"reference" desc:"Gradient scaling: channel (one factor per row or column, APOLLO) or tensor (one per weight, APOLLO-Mini)."`
	ScaleFront    bool    `json:"scaleFront" default:"reference" desc:"Apply sqrt(scale) before the norm-growth limiter rather than after."`
	DisableNL     bool    `json:"disableNL" default:"reference" desc:"Turn the norm-growth limiter off."`
}

// MicroAdamSpec is spec.optimizer.microadam.
type MicroAdamSpec struct {
	Window         int     `json:"window" default:"reference" desc:"Number of past sparse gradients kept, the m of the paper, in [1, 65536]."`
	Density        float64 `json:"density" default:"reference" desc:"Fraction of each top-k block kept per step, in (0, 1]."`
	TopKBlockSize  int     `json:"topKBlockSize" default:"reference" desc:"Length of the blocks top-k runs on, in [1, 65536]; fixed so results do not depend on the machine."`
	QuantBlockSize int     `json:"quantBlockSize" default:"reference" desc:"Elements sharing one min/max pair of the 4-bit error feedback, in [1, 16777216]."`
}

// DemoSpec is spec.optimizer.demo. DeMo's update is sign(...) times lr, so
// every weight moves by exactly lr per step: its lr is typically lower than
// AdamW's peak.
type DemoSpec struct {
	TopK   int     `json:"topK" default:"reference" desc:"DCT coefficients each replica sends per chunk, in [1, chunk²] (the reference's compression_topk)."`
	Chunk  int     `json:"chunk" default:"reference" desc:"Side s of the s×s chunks the momentum is transformed in, in [1, 256] (compression_chunk); a dimension it does not divide is zero-padded."`
	Decay  float64 `json:"decay" default:"reference" desc:"Momentum decay β in [0, 1) (compression_decay); the gradient is added times lr, without (1−β)."`
	Values string  `json:"values" default:"reference" desc:"How the selected coefficients travel: bf16 (2 bytes each) or sign (1 bit each plus one bf16 scale per chunk, as in Psyche)."`
}

// GrassSpec is spec.optimizer.grass. Sampled selections derive from
// spec.seed.
type GrassSpec struct {
	Rank          int     `json:"rank" default:"reference" desc:"Rows r selected per weight, >= 1; capped at the weight's row count. Between selections only the r×n gradient of the selected rows is formed."`
	UpdateProjGap int     `json:"updateProjGap" default:"reference" desc:"Steps between row selections, >= 1; top-r and norm form the full gradient once at each selection step."`
	Selection     string  `json:"selection" default:"reference" desc:"How rows are chosen: topr (largest gradient row norms), norm (sampled with probability proportional to norm^normPower) or uniform."`
	Replacement   bool    `json:"replacement" default:"reference" desc:"For norm and uniform: sample with replacement (unbiased with the paper's scaling) instead of without."`
	NormPower     float64 `json:"normPower" default:"reference" desc:"Exponent p of the row norm in norm selection, > 0."`
	Scale         float64 `json:"scale" default:"reference" desc:"Multiplier alpha of the scattered-back update, > 0."`
}

// EvalSpec sets periodic evaluation.
type EvalSpec struct {
	EverySteps int `json:"everySteps" default:"100" desc:"Evaluate every this many steps and after the last; 0 turns evaluation off."`
	Batches    int `json:"batches" default:"8" desc:"Validation batches (of batch.microBatchSize sequences) per evaluation."`
}

// CheckpointSpec sets durable checkpoints.
type CheckpointSpec struct {
	Dir        string `json:"dir" default:"\"\"" desc:"Directory for checkpoints (DIR/step-N/); empty means none unless --checkpoint-dir is given."`
	EverySteps int    `json:"everySteps" default:"0" desc:"Write a checkpoint every this many steps; 0 means only at the end and on interrupt."`
	Keep       int    `json:"keep" default:"2" desc:"Number of most recent checkpoints kept; 0 keeps all."`
}

// ParallelSpec lays the job out over ranks.
type ParallelSpec struct {
	Data           int    `json:"data" default:"1" desc:"Data-parallel replicas. Each trains on its own share of every step's batch (global batch = data × batch.microBatches × batch.microBatchSize sequences) and they exchange gradients as communication.exchange says. ternctl train starts data × pipeline worker processes on this machine (at most 256)."`
	Pipeline       int    `json:"pipeline" default:"1" desc:"Pipeline stages per replica: the blocks are cut into this many contiguous ranges, one per worker, and batch.microBatches microbatches flow through them (at most the number of layers)."`
	Schedule       string `json:"schedule" default:"\"1f1b\"" desc:"Pipeline schedule: 1f1b (each stage keeps at most pipeline−stage microbatches in flight) or gpipe (all forwards, then all backwards)."`
	VocabParallel  bool   `json:"vocabParallel" default:"true" desc:"Spread the input embedding and LM head rows evenly over all stages (Vocabulary Parallelism; the vocabulary is padded to a multiple of pipeline with classes no target names); false keeps the embedding on the first stage and the head on the last."`
	VocabAlgorithm int    `json:"vocabAlgorithm" default:"2" desc:"Vocabulary-parallel output layer: 2 (one barrier per microbatch) or 1 (two)."`
}

// CommunicationSpec sets the gradient exchange between replicas.
type CommunicationSpec struct {
	Exchange       string  `json:"exchange" default:"derived" desc:"Gradient exchange between data-parallel replicas: dense (ring all-reduce of float32 gradients), bf16 (the same with bfloat16 on the wire: half the bytes), none (no gradient all-reduce). Every optimizer except demo takes dense or bf16 (grass all-reduces only its selected rows); demo takes only none, because it exchanges its own compressed momentum (optimizer.demo). none with parallel.data > 1 is allowed only for demo. Default: none for demo, else dense."`
	TimeoutSeconds float64 `json:"timeoutSeconds" default:"60" desc:"Seconds a rank waits for a peer's message before failing the step with an error that names the peer, > 0. A peer whose process exits is reported at once."`
}

// PipelineScheduleNames are the supported spec.parallel.schedule values.
var PipelineScheduleNames = []string{"1f1b", "gpipe"}

// ExchangeNames are the supported spec.communication.exchange values.
var ExchangeNames = []string{"dense", "bf16", "none"}

// MaxDataParallel bounds spec.parallel.data: each replica is a process with
// a connection to every other.
const MaxDataParallel = 256

// Closed value sets. Validate and Explain both read this table; adding an
// optimizer means adding it to the optimizers table in optimizer.go, which
// OptimizerNames lists.
var (
	// OptimizerNames are the supported spec.optimizer.name values.
	OptimizerNames = optimizerNames()
	// ScheduleNames are the supported spec.optimizer.schedule values.
	ScheduleNames = []string{"cosine", "linear", "constant"}
	// DataKinds are the supported spec.data.kind values.
	DataKinds = []string{"dir", "tokens", "jsonl", "text"}
	// TokenizerNames are the supported tokenizers, in the order of
	// tokenizerVocab.
	TokenizerNames = []string{"byte", "gpt2", "cl100k_base"}
)

// tokenizerVocab is each tokenizer's vocabulary size: bytes, the GPT-2 BPE
// (50,000 merges + 256 bytes + <|endoftext|>) and OpenAI's cl100k_base
// (100,256 ranks + special tokens, highest id 100276).
var tokenizerVocab = map[string]int{"byte": 256, "gpt2": 50257, "cl100k_base": 100277}

// TokenizerVocab returns the vocabulary size of a tokenizer named in a spec.
func TokenizerVocab(name string) (int, bool) {
	v, ok := tokenizerVocab[name]
	return v, ok
}

// enums maps a field path to its allowed values.
func enums() map[string][]string {
	return map[string][]string{
		"apiVersion":                  {APIVersion},
		"kind":                        {Kind},
		"spec.model.preset":           model.PresetNames(),
		"spec.model.tokenizer":        TokenizerNames,
		"spec.data.kind":              DataKinds,
		"spec.data.tokenizer":         TokenizerNames,
		"spec.optimizer.name":         OptimizerNames,
		"spec.optimizer.schedule":     ScheduleNames,
		"spec.communication.exchange": ExchangeNames,
		"spec.parallel.schedule":      PipelineScheduleNames,

		"spec.optimizer.galore.projType":       {optim.GaLoreStd, optim.GaLoreReverseStd},
		"spec.optimizer.adam-mini.partition":   optim.AdamMiniPartitions,
		"spec.optimizer.apollo.scaleType":      {optim.ApolloChannel, optim.ApolloTensor},
		"spec.optimizer.apollo-mini.scaleType": {optim.ApolloChannel, optim.ApolloTensor},
		"spec.optimizer.demo.values":           {"bf16", "sign"},
	}
}
