package parallel

// Costs gives the simulator the duration and memory of each op. Times are in
// any one unit (seconds, or "one layer's forward"); memory in bytes.
type Costs interface {
	// Duration is how long compute op o keeps its stage busy.
	Duration(o Op) float64
	// MemDelta is the activation memory o allocates (> 0, counted from its
	// start) or frees (< 0, counted from its end).
	MemDelta(o Op) int64
	// P2PLatency is the delay between a send o and the moment its message
	// can be received.
	P2PLatency(o Op) float64
	// CollLatency is how long collective o takes once the last member has
	// reached it. It is asked once per collective, with the op as its root
	// stage lists it.
	CollLatency(o Op) float64
}

// StageCosts are the costs of one stage's compute ops, by kind; kinds left
// out cost nothing.
type StageCosts struct {
	Time map[Kind]float64
	Mem  map[Kind]int64
}

// Link is a point-to-point latency model: Alpha + Beta·bytes.
type Link struct {
	Alpha float64 // per message
	Beta  float64 // per byte
}

// TableCosts is a Costs from per-stage, per-kind tables: every op of a kind
// on a stage costs the same.
type TableCosts struct {
	// Stages[i] costs stage i; a single entry costs every stage.
	Stages   []StageCosts
	P2P      Link
	P2PBytes int64               // bytes of one activation or gradient message
	Coll     map[CollTag]float64 // latency of each collective tag
}

func (c *TableCosts) stage(i int) StageCosts {
	switch {
	case len(c.Stages) == 1:
		return c.Stages[0]
	case i >= 0 && i < len(c.Stages):
		return c.Stages[i]
	}
	return StageCosts{}
}

// Duration implements Costs.
func (c *TableCosts) Duration(o Op) float64 { return c.stage(o.Stage).Time[o.Kind] }

// MemDelta implements Costs.
func (c *TableCosts) MemDelta(o Op) int64 { return c.stage(o.Stage).Mem[o.Kind] }

// P2PLatency implements Costs.
func (c *TableCosts) P2PLatency(Op) float64 {
	return c.P2P.Alpha + c.P2P.Beta*float64(c.P2PBytes)
}

// CollLatency implements Costs.
func (c *TableCosts) CollLatency(o Op) float64 { return c.Coll[o.Tag] }

// UnitCosts are the textbook costs: a forward takes 1, a backward 2 (the
// reference's defaults before profiling), an activation is +1 on F and −1
// on B, so memory counts microbatches; the vocabulary passes, sends and
// collectives are free.
func UnitCosts() *TableCosts {
	return &TableCosts{Stages: []StageCosts{{
		Time: map[Kind]float64{F: 1, B: 2},
		Mem:  map[Kind]int64{F: 1, B: -1},
	}}}
}

// zeroCosts makes every op free; a schedule that finishes under it has no
// deadlock that depends on the order of ops alone.
type zeroCosts struct{}

func (zeroCosts) Duration(Op) float64    { return 0 }
func (zeroCosts) MemDelta(Op) int64      { return 0 }
func (zeroCosts) P2PLatency(Op) float64  { return 0 }
func (zeroCosts) CollLatency(Op) float64 { return 0 }
