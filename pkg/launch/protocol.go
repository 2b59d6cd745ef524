package launch

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/ternml/tern/pkg/train"
)

// config is the first line a child reads.
type config struct {
	Job           json.RawMessage `json:"job"` // the resolved job spec (CanonicalJSON)
	Rank          int             `json:"rank"`
	World         int             `json:"world"`
	Token         string          `json:"token"`
	CheckpointDir string          `json:"checkpointDir,omitempty"`
	Resume        string          `json:"resume,omitempty"`
	// Progress asks the child to draw data-loading progress on its stderr.
	Progress bool `json:"progress,omitempty"`
}

// toChild is one line from the parent.
type toChild struct {
	Config *config  `json:"config,omitempty"`
	Peers  []string `json:"peers,omitempty"`
	Stop   bool     `json:"stop,omitempty"`
}

// stepLine is a child's StepReport with what the parent aggregates. The
// numbers that can be NaN or infinite (a diverging run) travel as
// jsonFloat, which JSON cannot otherwise carry.
type stepLine struct {
	train.StepReport
	Loss     jsonFloat `json:"loss"`
	GradNorm jsonFloat `json:"grad_norm"`
	Steps    int       `json:"steps"`
	ETA      float64   `json:"eta_s"`
	PeakRSS  int64     `json:"peak_rss_bytes"`
}

func (s *stepLine) report() train.StepReport {
	r := s.StepReport
	r.Loss, r.GradNorm, r.Steps, r.ETASeconds = float64(s.Loss), float64(s.GradNorm), s.Steps, s.ETA
	return r
}

// summaryLine is a child's Summary, its losses as jsonFloat (the eval loss
// is NaN when there was no evaluation).
type summaryLine struct {
	train.Summary
	FinalLoss     jsonFloat `json:"final_loss"`
	FinalEvalLoss jsonFloat `json:"final_eval_loss"`
}

func (s *summaryLine) summary() *train.Summary {
	sum := s.Summary
	sum.FinalLoss, sum.FinalEvalLoss = float64(s.FinalLoss), float64(s.FinalEvalLoss)
	return &sum
}

// jsonFloat is a float64 that encodes NaN and ±Inf as the strings "NaN",
// "+Inf" and "-Inf".
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return json.Marshal(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return json.Marshal(v)
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(math.IsNaN(v) || math.IsInf(v, 0)) {
			return fmt.Errorf("bad number %q", s)
		}
		*f = jsonFloat(v)
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = jsonFloat(v)
	return nil
}

// fromChild is one line from a child.
type fromChild struct {
	Listening string         `json:"listening,omitempty"`
	Started   *train.RunInfo `json:"started,omitempty"`
	Step      *stepLine      `json:"step,omitempty"`
	Log       string         `json:"log,omitempty"`
	Summary   *summaryLine   `json:"summary,omitempty"`
	Error     string         `json:"error,omitempty"`
}

// Timeouts of the launch handshake. Starting a child and binding its port
// takes milliseconds; connecting waits for the slowest child to start.
const (
	listenTimeout  = 30 * time.Second
	connectTimeout = 60 * time.Second
)
