package parallel

import "fmt"

// Topology places world = DP × PP ranks on a grid of data-parallel replicas
// and pipeline stages. Rank r is stage r mod PP of replica r / PP
// (rank = dp·PP + pp), so a replica's stages are consecutive ranks: with
// ranks handed out to machines in order, the point-to-point traffic of a
// pipeline, which moves activations every microbatch, stays on as few
// machines as possible, while the data-parallel exchange, once a step, spans
// them.
type Topology struct {
	DP int // data-parallel replicas
	PP int // pipeline stages per replica
}

// NewTopology checks dp and pp and returns their grid.
func NewTopology(dp, pp int) (Topology, error) {
	if dp < 1 {
		return Topology{}, fmt.Errorf("topology: data-parallel size must be at least 1, got %d", dp)
	}
	if pp < 1 {
		return Topology{}, fmt.Errorf("topology: pipeline size must be at least 1, got %d", pp)
	}
	return Topology{DP: dp, PP: pp}, nil
}

// TopologyOfWorld splits world ranks into replicas of pp stages.
func TopologyOfWorld(world, pp int) (Topology, error) {
	if world < 1 {
		return Topology{}, fmt.Errorf("topology: world size must be at least 1, got %d", world)
	}
	if pp < 1 {
		return Topology{}, fmt.Errorf("topology: pipeline size must be at least 1, got %d", pp)
	}
	if world%pp != 0 {
		return Topology{}, fmt.Errorf("topology: world size %d is not a multiple of the pipeline size %d (world = data × pipeline)", world, pp)
	}
	return NewTopology(world/pp, pp)
}

// World is the number of ranks.
func (t Topology) World() int { return t.DP * t.PP }

// Rank is the rank of stage pp of replica dp.
func (t Topology) Rank(dp, pp int) (int, error) {
	if dp < 0 || dp >= t.DP {
		return 0, fmt.Errorf("topology: replica %d out of range [0,%d)", dp, t.DP)
	}
	if pp < 0 || pp >= t.PP {
		return 0, fmt.Errorf("topology: stage %d out of range [0,%d)", pp, t.PP)
	}
	return dp*t.PP + pp, nil
}

// Coords is the (replica, stage) of rank.
func (t Topology) Coords(rank int) (dp, pp int, err error) {
	if rank < 0 || rank >= t.World() {
		return 0, 0, fmt.Errorf("topology: rank %d out of range [0,%d)", rank, t.World())
	}
	return rank / t.PP, rank % t.PP, nil
}

// PipelineGroup lists the ranks of replica dp's stages in stage order:
// member i is stage i, and activations flow from member i to member i+1.
func (t Topology) PipelineGroup(dp int) ([]int, error) {
	if _, err := t.Rank(dp, 0); err != nil {
		return nil, err
	}
	g := make([]int, t.PP)
	for i := range g {
		g[i] = dp*t.PP + i
	}
	return g, nil
}

// VocabGroup lists the members of replica dp's vocabulary collectives (the
// Bcast and AllReduce ops of a Schedule): the same ranks as its pipeline
// group, in stage order, so a collective's root stage is its group rank.
// Build it as a communication group of its own, apart from the
// point-to-point traffic, so the two never take each other's messages (the
// reference implementation keeps a separate process group for the same
// reason).
func (t Topology) VocabGroup(dp int) ([]int, error) { return t.PipelineGroup(dp) }

// DPGroup lists the ranks that hold stage pp in every replica, in replica
// order: the group that synchronises that stage's gradients.
func (t Topology) DPGroup(pp int) ([]int, error) {
	if _, err := t.Rank(0, pp); err != nil {
		return nil, err
	}
	g := make([]int, t.DP)
	for i := range g {
		g[i] = i*t.PP + pp
	}
	return g, nil
}

// Neighbours are the ranks of the previous and next stage of rank's replica;
// -1 where rank is the first or the last stage.
func (t Topology) Neighbours(rank int) (prev, next int, err error) {
	_, pp, err := t.Coords(rank)
	if err != nil {
		return 0, 0, err
	}
	prev, next = -1, -1
	if pp > 0 {
		prev = rank - 1
	}
	if pp < t.PP-1 {
		next = rank + 1
	}
	return prev, next, nil
}
