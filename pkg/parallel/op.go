package parallel

import (
	"fmt"
	"strings"
)

// Kind is what an Op does. doc.go says what each kind consumes and produces.
type Kind uint8

// Op kinds. F, B, S, T, IF, IB and Loss compute; the rest communicate.
const (
	F         Kind = iota // forward of the stage's blocks
	B                     // backward of the stage's blocks: input and weight gradients
	S                     // output layer forward on the stage's head rows
	T                     // output layer backward on the stage's head rows
	IF                    // input embedding lookup on the stage's embedding rows
	IB                    // input embedding gradient into the stage's embedding rows
	Loss                  // per-token loss on the loss stage
	SendAct               // send F's output to the next stage
	RecvAct               // receive the previous stage's F output
	SendGrad              // send B's input gradient to the previous stage
	RecvGrad              // receive the next stage's input gradient
	Bcast                 // broadcast from Op.Peer over the vocabulary group
	AllReduce             // sum (or max, per Tag) over the vocabulary group
	numKinds
)

var kindNames = [...]string{"F", "B", "S", "T", "IF", "IB", "Loss", "SendAct", "RecvAct", "SendGrad", "RecvGrad", "Bcast", "AllReduce"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// IsCompute reports whether k runs on the stage's device rather than the
// network.
func (k Kind) IsCompute() bool { return k <= Loss }

// IsP2P reports whether k is a point-to-point send or receive.
func (k Kind) IsP2P() bool { return k >= SendAct && k <= RecvGrad }

// IsCollective reports whether k is a vocabulary-group collective.
func (k Kind) IsCollective() bool { return k == Bcast || k == AllReduce }

// partner is the other end of a point-to-point kind.
func partner(k Kind) Kind {
	switch k {
	case SendAct:
		return RecvAct
	case RecvAct:
		return SendAct
	case SendGrad:
		return RecvGrad
	case RecvGrad:
		return SendGrad
	}
	return k
}

// CollTag names what a collective carries; doc.go gives each one's payload.
type CollTag uint8

// Collective tags.
const (
	NoTag   CollTag = iota // not a collective
	C0                     // Bcast of the final hidden states X from the loss stage
	C1                     // AllReduce of the output layer's softmax statistics (Alg. 2: and the input gradient)
	C2                     // AllReduce of the output layer's input gradient (Alg. 1 only)
	IFSum                  // AllReduce of the embedding shards' lookups, for stage 0
	IBBcast                // Bcast of the embedding output's gradient from stage 0
	numTags
)

var tagNames = [...]string{"-", "C0", "C1", "C2", "IFsum", "IBbcast"}

func (t CollTag) String() string {
	if int(t) < len(tagNames) {
		return tagNames[t]
	}
	return fmt.Sprintf("CollTag(%d)", uint8(t))
}

// Op is one step of a stage's list.
type Op struct {
	Kind  Kind
	Stage int // the stage that runs it
	MB    int // microbatch, 0 ≤ MB < M
	// Peer is the other stage of a send or receive, and the root stage of
	// a collective (the one whose data is broadcast, or the one that needs
	// the reduced result); -1 for compute ops.
	Peer int
	// Coll numbers the collectives of a schedule from 0 in the order every
	// stage runs them; the same collective has the same Coll on every
	// stage. -1 for other ops.
	Coll int
	Tag  CollTag // collectives only
}

func (o Op) String() string {
	switch {
	case o.Kind.IsCollective():
		return fmt.Sprintf("%s %s#%d(mb %d, root %d)", o.Kind, o.Tag, o.Coll, o.MB, o.Peer)
	case o.Kind == SendAct || o.Kind == SendGrad:
		return fmt.Sprintf("%s(mb %d → stage %d)", o.Kind, o.MB, o.Peer)
	case o.Kind == RecvAct || o.Kind == RecvGrad:
		return fmt.Sprintf("%s(mb %d ← stage %d)", o.Kind, o.MB, o.Peer)
	}
	return fmt.Sprintf("%s(mb %d)", o.Kind, o.MB)
}

// short is a compact form for schedule listings: F3, >A3, <G3, C1#7.
func (o Op) short() string {
	switch o.Kind {
	case SendAct:
		return fmt.Sprintf(">A%d", o.MB)
	case RecvAct:
		return fmt.Sprintf("<A%d", o.MB)
	case SendGrad:
		return fmt.Sprintf(">G%d", o.MB)
	case RecvGrad:
		return fmt.Sprintf("<G%d", o.MB)
	case Bcast, AllReduce:
		return fmt.Sprintf("%s:%d", o.Tag, o.MB)
	}
	return fmt.Sprintf("%s%d", o.Kind, o.MB)
}

func computeOp(k Kind, stage, mb int) Op {
	return Op{Kind: k, Stage: stage, MB: mb, Peer: -1, Coll: -1}
}

// Schedule is what every stage of one pipeline replica runs in one training
// step: Stages[i] is stage i's op list, in execution order. Every replica
// runs the same schedule.
type Schedule struct {
	P, M      int       // stages and microbatches
	Vocab     VocabMode // which vocabulary ops the lists contain
	Algorithm int       // vocabulary-parallel algorithm, 1 or 2; 0 unless Vocab is VocabParallel
	LossStage int       // the stage that holds X and computes the loss (P−1)
	Stages    [][]Op
}

// String lists each stage's ops compactly, one stage per line.
func (s *Schedule) String() string {
	var b strings.Builder
	for i, ops := range s.Stages {
		fmt.Fprintf(&b, "stage %d:", i)
		for _, o := range ops {
			b.WriteByte(' ')
			b.WriteString(o.short())
		}
		b.WriteByte('\n')
	}
	return b.String()
}
