package coordinator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Bounds on the logs a worker ships.
const (
	// maxLogLineBytes cuts longer lines; a rank's messages are sentences.
	maxLogLineBytes = 4096
	// maxLogLinesPerMsg bounds one RankLogs message (a reconnect replays
	// the lines a worker retains, in messages of at most this many).
	maxLogLinesPerMsg = 1000
	// maxLogRanks bounds the rank numbers accepted, as the scheduler does.
	maxLogRanks = 1 << 16
	// maxMetricPoints bounds a GetJobMetrics answer (about 60 bytes a
	// point, well inside gRPC's 4 MiB).
	maxMetricPoints = 20000
)

// logStore keeps what the workers ship about each job on the
// coordinator's disk, append-only, so it outlives a coordinator restart:
//
//	DIR/JOB/ATTEMPT/RANK.log   one line per log line: "SEQ UNIXNANO TEXT"
//	DIR/JOB/metrics.jsonl      one JSON object per step reported by rank 0
//
// Workers number each rank's lines (seq, from 1) and send the lines they
// retain again after a reconnect; a line whose number is not above the
// last one stored is a repeat and is dropped. It is safe for concurrent
// use: the sessions' receivers append, the loop records metrics, readers
// serve GetLogs and GetJobMetrics.
type logStore struct {
	dir string

	mu sync.Mutex
	// last is the last seq stored per rank file, read from the file the
	// first time it is touched.
	last map[string]int64
	// metrics caches each job's metrics file once read.
	metrics map[string][]*ternv1.StepMetrics
	// changed is closed, and replaced, after every append: followers wait
	// on it.
	changed chan struct{}
}

func newLogStore(dir string) (*logStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("coordinator: log directory: %w", err)
	}
	return &logStore{dir: dir, last: map[string]int64{}, metrics: map[string][]*ternv1.StepMetrics{}, changed: make(chan struct{})}, nil
}

func (s *logStore) rankPath(job string, attempt, rank int) string {
	return filepath.Join(s.dir, job, strconv.Itoa(attempt), strconv.Itoa(rank)+".log")
}

func (s *logStore) metricsPath(job string) string {
	return filepath.Join(s.dir, job, "metrics.jsonl")
}

// wait returns a channel closed at the next append.
func (s *logStore) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *logStore) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// append stores a rank's lines, skipping those already stored.
func (s *logStore) append(job string, attempt, rank int, lines []*ternv1.LogLine) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.rankPath(job, attempt, rank)
	last, ok := s.last[path]
	if !ok {
		var err error
		if last, err = lastSeq(path); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	for _, l := range lines {
		if l.Seq <= last {
			continue
		}
		last = l.Seq
		t := l.Time.AsTime()
		if l.Time == nil {
			t = time.Now()
		}
		text := l.Text
		if len(text) > maxLogLineBytes {
			text = text[:maxLogLineBytes] + "…"
		}
		fmt.Fprintf(&buf, "%d %d %s\n", l.Seq, t.UnixNano(), bytes.Map(oneLineRune, []byte(text)))
	}
	s.last[path] = last
	if buf.Len() == 0 {
		return nil
	}
	if err := appendFile(path, buf.Bytes()); err != nil {
		return err
	}
	s.notifyLocked()
	return nil
}

// oneLineRune keeps a stored line on one line.
func oneLineRune(r rune) rune {
	if r == '\n' || r == '\r' {
		return ' '
	}
	return r
}

func appendFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("coordinator: store logs: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("coordinator: store logs: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("coordinator: store logs in %s: %w", path, err)
	}
	return nil
}

// lastSeq reads the seq of a rank file's last line (0 for no file).
func lastSeq(path string) (int64, error) {
	lines, _, err := readLogFile(path, 0, 0, 0)
	if err != nil || len(lines) == 0 {
		return 0, err
	}
	return lines[len(lines)-1].Seq, nil
}

// read returns the lines of a rank file from byte offset on, and the
// offset after the last complete line.
func (s *logStore) read(job string, attempt, rank int, offset int64) ([]*ternv1.LogLine, int64, error) {
	lines, next, err := readLogFile(s.rankPath(job, attempt, rank), offset, attempt, rank)
	return lines, next, err
}

func readLogFile(path string, offset int64, attempt, rank int) ([]*ternv1.LogLine, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, offset, nil
	}
	if err != nil {
		return nil, offset, fmt.Errorf("read logs: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, fmt.Errorf("read logs: %w", err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	var out []*ternv1.LogLine
	for {
		b, err := r.ReadBytes('\n')
		if err == io.EOF {
			// A line without its newline is still being written: read it
			// next time.
			return out, offset, nil
		}
		if err != nil {
			return out, offset, fmt.Errorf("read logs: %w", err)
		}
		offset += int64(len(b))
		if l, ok := parseLogLine(b[:len(b)-1]); ok {
			l.Attempt, l.Rank = int32(attempt), int32(rank)
			out = append(out, l)
		}
	}
}

func parseLogLine(b []byte) (*ternv1.LogLine, bool) {
	seqB, rest, ok := bytes.Cut(b, []byte(" "))
	if !ok {
		return nil, false
	}
	tB, text, _ := bytes.Cut(rest, []byte(" "))
	seq, err1 := strconv.ParseInt(string(seqB), 10, 64)
	ns, err2 := strconv.ParseInt(string(tB), 10, 64)
	if err1 != nil || err2 != nil {
		return nil, false
	}
	return &ternv1.LogLine{Seq: seq, Time: timestamppb.New(time.Unix(0, ns)), Text: string(text)}, true
}

// metricRecord is one line of metrics.jsonl.
type metricRecord struct {
	Attempt  int32    `json:"attempt"`
	Step     int64    `json:"step"`
	Loss     float64  `json:"loss"`
	TokensPS float64  `json:"tokensPerSecond"`
	StepMS   float64  `json:"stepMs"`
	LR       float64  `json:"lr"`
	EvalLoss *float64 `json:"evalLoss,omitempty"`
	Time     int64    `json:"time"`
}

func (r metricRecord) proto() *ternv1.StepMetrics {
	return &ternv1.StepMetrics{Attempt: r.Attempt, Step: r.Step, Loss: r.Loss, TokensPerSecond: r.TokensPS,
		StepMs: r.StepMS, Lr: r.LR, EvalLoss: r.EvalLoss, Time: timestamppb.New(time.Unix(0, r.Time))}
}

// appendMetric records one step of a job.
func (s *logStore) appendMetric(job string, m *ternv1.StepMetrics) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms, err := s.metricsLocked(job)
	if err != nil {
		return err
	}
	rec := metricRecord{Attempt: m.Attempt, Step: m.Step, Loss: m.Loss, TokensPS: m.TokensPerSecond, StepMS: m.StepMs,
		LR: m.Lr, EvalLoss: m.EvalLoss, Time: m.Time.AsTime().UnixNano()}
	b, err := json.Marshal(rec)
	if err != nil {
		// A NaN or infinite loss: JSON cannot carry it, and a plot could
		// not draw it either.
		return nil
	}
	if err := appendFile(s.metricsPath(job), append(b, '\n')); err != nil {
		return err
	}
	s.metrics[job] = capMetrics(append(ms, rec.proto()))
	s.notifyLocked()
	return nil
}

// metricsAfter returns a job's step metrics with a step after the given
// one, oldest first.
func (s *logStore) metricsAfter(job string, after int64) ([]*ternv1.StepMetrics, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms, err := s.metricsLocked(job)
	if err != nil {
		return nil, err
	}
	var out []*ternv1.StepMetrics
	for _, m := range ms {
		if m.Step > after {
			out = append(out, m)
		}
	}
	return thin(out, maxMetricPoints), nil
}

// thin keeps at most n points, evenly spaced, the last one always: a
// plot loses nothing it could draw, and the answer fits a gRPC message.
func thin(ms []*ternv1.StepMetrics, n int) []*ternv1.StepMetrics {
	if len(ms) <= n {
		return ms
	}
	out := make([]*ternv1.StepMetrics, 0, n)
	for i := range n {
		out = append(out, ms[(i+1)*len(ms)/n-1])
	}
	return out
}

func (s *logStore) metricsLocked(job string) ([]*ternv1.StepMetrics, error) {
	if ms, ok := s.metrics[job]; ok {
		return ms, nil
	}
	b, err := os.ReadFile(s.metricsPath(job))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read metrics of job %s: %w", job, err)
	}
	var ms []*ternv1.StepMetrics
	for _, line := range bytes.Split(b, []byte("\n")) {
		var r metricRecord
		if len(line) == 0 || json.Unmarshal(line, &r) != nil {
			continue // a torn last line after a crash
		}
		ms = append(ms, r.proto())
	}
	ms = capMetrics(ms)
	s.metrics[job] = ms
	return ms, nil
}

// capMetrics bounds the points held in memory for a job: past twice what
// one answer carries, they are thinned to one answer's worth (the file
// keeps every step).
func capMetrics(ms []*ternv1.StepMetrics) []*ternv1.StepMetrics {
	if len(ms) > 2*maxMetricPoints {
		return slices.Clone(thin(ms, maxMetricPoints))
	}
	return ms
}

// remove deletes everything stored about a job, when it is deleted or
// before a new job takes its name.
func (s *logStore) remove(job string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.metrics, job)
	prefix := filepath.Join(s.dir, job) + string(filepath.Separator)
	for p := range s.last {
		if len(p) > len(prefix) && p[:len(prefix)] == prefix {
			delete(s.last, p)
		}
	}
	if err := os.RemoveAll(filepath.Join(s.dir, job)); err != nil {
		return fmt.Errorf("coordinator: remove logs of job %s: %w", job, err)
	}
	return nil
}

// tail keeps the last n lines (all for n <= 0) at or after since.
func tailLines(lines []*ternv1.LogLine, n int64, since time.Time) []*ternv1.LogLine {
	if !since.IsZero() {
		i := 0
		for i < len(lines) && lines[i].Time.AsTime().Before(since) {
			i++
		}
		lines = lines[i:]
	}
	if n > 0 && int64(len(lines)) > n {
		lines = lines[int64(len(lines))-n:]
	}
	return lines
}

// mergeLines orders several ranks' lines by time; lines of one rank keep
// their order, and ties go to the lower rank.
func mergeLines(perRank [][]*ternv1.LogLine) []*ternv1.LogLine {
	var out []*ternv1.LogLine
	for _, ls := range perRank {
		out = append(out, ls...)
	}
	slices.SortStableFunc(out, func(a, b *ternv1.LogLine) int {
		if c := a.Time.AsTime().Compare(b.Time.AsTime()); c != 0 {
			return c
		}
		if a.Rank != b.Rank {
			return int(a.Rank - b.Rank)
		}
		return int(a.Seq - b.Seq)
	})
	return out
}
