// Package parallel plans pipeline and data parallelism: it places ranks on a
// DP × PP grid, cuts a model into stages, builds each stage's schedule of
// operations for one training step, checks schedules, and simulates them.
// It is pure: no I/O, no goroutines, no clocks. A runtime executes the same
// op lists that the simulator times, so what is simulated is what runs.
//
// # Layout
//
// Topology maps rank = dp·PP + pp (a replica's stages are consecutive
// ranks) and lists the groups: PipelineGroup (point-to-point neighbours),
// VocabGroup (one per replica: its stages, for the vocabulary collectives;
// build it as a communication group of its own) and DPGroup (stage pp of
// every replica, for the gradient exchange). Partition cuts a model.Config
// into model.StageSpecs: blocks as even as possible (the last stages take
// the extra blocks), the final norm on the last stage, and either
// vocabulary parallelism (VocabParallel: the vocabulary padded to a
// multiple of PP, and rows [r·V/PP, (r+1)·V/PP) of both the embedding and
// the LM head on stage r; padded rows are classes no target names) or the
// naive placement (embedding on stage 0, head on the last stage).
// ParamCounts and ParamMemory give each stage's parameter memory.
//
// # Schedules
//
//	s, err := parallel.Build(parallel.Plan{PP: 4, M: 8})   // 1F1B, vocab-parallel, Algorithm 2
//	for _, op := range s.Stages[myStage] { ... }
//
// Build composes passes, each pure: a generator (GPipe or 1F1B) emits the
// F and B ops; a vocabulary pass adds the embedding, output-layer and loss
// ops with their collectives (naive, or vocabulary-parallel by time-based
// insertion, Algorithm 1 or 2 of Yeung et al., "Balancing Pipeline
// Parallelism with Vocabulary Parallelism", MLSys 2025); a last pass adds
// the sends and receives. Validate checks the result; Simulate times it.
//
// # Executing a schedule
//
// A stage runs its list in order. Sends are asynchronous: the runtime
// buffers them (Result.MaxQueued says how many can be outstanding per
// receiver) and never blocks in a send. A receive blocks until its message
// arrives; match messages by (kind, microbatch), not arrival order. A
// collective runs over the replica's VocabGroup; Op.Peer is its root (the
// group rank that broadcasts, or that needs the reduced result) and Op.Coll
// its number, the same on every stage and increasing along every list. Two
// ways of running collectives are valid for every schedule Build returns
// (Validate proves the first; the second only lets ops start earlier):
//
//   - blocking: the stage waits inside each collective;
//   - lanes: the stage hands each collective to a lane of its own (say one
//     goroutine) that runs them one at a time in list order, and only the
//     op that consumes a collective's result waits for it: S(i) for C0(i),
//     T(i) and Loss(i) for C1(i), the loss stage's B(i) for C2(i), stage
//     0's F(i) for IFsum(i), IB(i) for IBbcast(i). A lane reads a
//     collective's input when it runs it, so keep that buffer (one per
//     microbatch) untouched until the collective completes.
//
// A runtime with lanes hides the vocabulary barriers behind compute, which
// the default schedules are shaped for; see Plan.BlockingCollectives for a
// runtime without them. After its list, each stage exchanges its gradients
// over its DPGroup and steps its optimizer.
//
// # What each op does
//
// Microbatch i has n tokens, their targets and h-wide activations. Under
// vocabulary parallelism every stage needs the tokens (IF, IB) and the
// targets (S, T). g is the per-token loss gradient, scale·[target valid]
// for a mean loss with the step's scale; every stage computes it from the
// targets, so none waits to learn it.
//
//	F(i)        forward of the stage's blocks (and the final norm on the last stage).
//	            Input: stage 0 the embedding output (IFsum(i), or IF(i) when naive);
//	            others RecvAct(i). Keeps activations until B(i). Output: SendAct(i),
//	            or on the loss stage X_i, the input of C0(i) (S(i) when naive).
//	B(i)        backward of the stage's blocks: accumulates their weight gradients,
//	            frees F(i)'s activations. Input: RecvGrad(i), or on the loss stage
//	            ∂L/∂X_i from Loss(i) (Algorithm 2), C2(i) (Algorithm 1) or T(i)
//	            (naive). Output: SendGrad(i), or on stage 0 the embedding output's
//	            gradient, the input of IBbcast(i) (IB(i) when naive).
//	SendAct(i)  n×h activations to stage Peer = r+1;  RecvAct(i) receives them from r−1.
//	SendGrad(i) n×h gradient to stage Peer = r−1;     RecvGrad(i) receives it from r+1.
//	IF(i)       look up the tokens in the stage's embedding rows; tokens outside
//	            them give zero rows (naive: stage 0 looks up all of them).
//	AllReduce IFsum(i), root 0: sum of the IF(i) outputs (n×h); only the root
//	            needs it, so a reduce to the root suffices. Input of stage 0's F(i).
//	Bcast C0(i), root the loss stage: X_i (n×h, float32) to every stage, kept until T(i).
//	S(i)        logits Z_r = X_i·W_rᵀ over the stage's head rows; per token the
//	            local max m_r, sum s_r = Σ exp(Z_r − m_r) and, where the target is
//	            one of the rows, its logit. Algorithm 2 also forms the n×h terms
//	            A_r = softmax_r(Z_r)·W_r (local normalisation) and W_r[target].
//	            Keeps what T(i) needs. Naive: the loss stage over the whole vocabulary.
//	AllReduce C1(i), root the loss stage: MAX of m_r, then SUM of the rescaled
//	            s_r·exp(m_r − m) and of the target logits, 3n floats, result on
//	            every stage (T needs m and s). Algorithm 2 then sums
//	            g⊙(α_r·A_r − W_r[target]), α_r = s_r·exp(m_r − m)/s, to the
//	            root: ∂L/∂X_i (n×h).
//	Loss(i)     loss stage only: per-token loss log s + m − z_target, summed for
//	            reporting; Algorithm 2 hands the reduced ∂L/∂X_i to B(i).
//	T(i)        head weight gradient ∇W_r += G_rᵀ·X_i with
//	            G_r = g⊙(softmax over all rows, restricted to r − onehot); frees X_i
//	            and S(i)'s buffers. Algorithm 1 also forms the partial G_r·W_r (n×h).
//	            Naive: the whole head gradient and ∂L/∂X_i for B(i).
//	AllReduce C2(i), Algorithm 1 only, root the loss stage: sum of the partial
//	            G_r·W_r, ∂L/∂X_i for the loss stage's B(i).
//	Bcast IBbcast(i), root 0: the embedding output's gradient (n×h) from stage 0's B(i).
//	IB(i)       scatter-add that gradient into the stage's embedding rows for the
//	            tokens they hold (naive: stage 0, every token).
//
// # Simulation
//
// Simulate runs a schedule under a Costs model (TableCosts: per stage and
// kind, a duration and an activation-memory change; Alpha + Beta·bytes per
// message; a latency per collective) with the execution semantics above,
// blocking or with lanes (SimOptions), and returns the step time, each
// stage's compute, communication and idle time, the bubble fraction, and
// the peak activation memory in microbatches and bytes. A schedule that
// cannot finish yields a *DeadlockError naming each stage's blocked op.
package parallel
