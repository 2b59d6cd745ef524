package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

func newGetCmd(e *env, cf *clusterFlags) *cobra.Command {
	var output string
	var watch bool
	c := &cobra.Command{
		Use:   "get jobs|workers [NAME] [-w]",
		Short: "List jobs or workers of the coordinator",
		Long: "List jobs (or one job) or workers as a table on stdout.\n\n" +
			"-o wide adds columns; -o json and -o yaml give every field (a list as\n" +
			"{items: [...]}, one named job as the object itself); -o name prints job/NAME\n" +
			"or worker/NAME, one a line.",
		Example: "  ternctl get jobs\n  ternctl get jobs tiny -o json\n  ternctl get workers -o wide",
		Args:    cobra.RangeArgs(1, 2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return []string{"jobs", "workers"}, cobra.ShellCompDirectiveNoFileComp
			}
			if isJobsKind(args[0]) && len(args) == 1 {
				return jobNames(cf), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := getOutputFlag(output); err != nil {
				return err
			}
			switch {
			case isJobsKind(args[0]):
				name := ""
				if len(args) == 2 {
					name = args[1]
				}
				if watch {
					if name == "" {
						return usagef("get jobs -w needs a job name: get jobs NAME -w")
					}
					return watchJob(cmd.Context(), e, cf, name, output)
				}
				return getJobs(cmd.Context(), e, cf, name, output)
			case args[0] == "workers" || args[0] == "worker":
				if watch {
					return usagef("-w works with get jobs NAME only")
				}
				if len(args) == 2 {
					return usagef("get workers takes no name (it lists every worker)")
				}
				return getWorkers(cmd.Context(), e, cf, output)
			}
			return usagef("unknown resource %q (allowed: jobs, workers)", args[0])
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "output format: wide, json, yaml or name (default: a table)")
	c.Flags().BoolVarP(&watch, "watch", "w", false, "with get jobs NAME: print the job again at every change until it is over (Ctrl-C stops watching, not the job)")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("wide", "json", "yaml", "name"))
	return c
}

func isJobsKind(s string) bool { return s == "jobs" || s == "job" }

func getOutputFlag(v string) error {
	switch v {
	case "", "wide", "json", "yaml", "name":
		return nil
	}
	return usagef("-o %q is not supported (allowed: wide, json, yaml, name)", v)
}

func getJobs(ctx context.Context, e *env, cf *clusterFlags, name, output string) error {
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	var jobs []*ternv1.Job
	if name != "" {
		resp, err := client.GetJob(ctx, &ternv1.GetJobRequest{Name: name})
		if err != nil {
			return rpcErr(cf.addr, "get job "+name, err)
		}
		jobs = []*ternv1.Job{resp.Job}
	} else {
		resp, err := client.ListJobs(ctx, &ternv1.ListJobsRequest{})
		if err != nil {
			return rpcErr(cf.addr, "list jobs", err)
		}
		jobs = resp.Jobs
	}
	switch output {
	case "json", "yaml":
		views := make([]*jobView, len(jobs))
		for i, j := range jobs {
			views[i] = newJobView(j)
		}
		if name != "" {
			return writeStructured(e.stdout, output, views[0])
		}
		return writeStructured(e.stdout, output, map[string]any{"items": views})
	case "name":
		for _, j := range jobs {
			fmt.Fprintf(e.stdout, "job/%s\n", j.Name)
		}
		return nil
	}
	if len(jobs) == 0 {
		fmt.Fprintln(e.stderr, "No jobs.")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, jobHeader(output == "wide"))
	for _, j := range jobs {
		fmt.Fprintln(tw, jobRow(j, output == "wide", e.now()))
	}
	return tw.Flush()
}

func jobHeader(wide bool) string {
	head := "NAME\tPHASE\tPROGRESS\tLOSS\tTOKENS/S\tETA\tAGE"
	if wide {
		head += "\tRANKS\tATTEMPT\tRESTARTS"
	}
	return head + "\tREASON"
}

func jobRow(j *ternv1.Job, wide bool, now time.Time) string {
	row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", j.Name, phaseName(j.Phase), progressText(j), lossText(j), rateText(j), etaText(j), ageText(j.Created, now))
	if wide {
		row += fmt.Sprintf("\t%dx%d\t%d\t%d/%d", j.DataParallel, j.PipelineParallel, j.Attempt, j.Restarts, j.MaxRestarts)
	}
	return row + "\t" + oneLine(j.Reason)
}

// etaSeconds estimates the time left from the recent step time; nil when
// the job is not running or has no step time yet.
func etaSeconds(j *ternv1.Job) *float64 {
	if j.Phase != ternv1.JobPhase_JOB_PHASE_RUNNING || j.StepMs <= 0 || j.Steps <= j.CommittedStep {
		return nil
	}
	s := float64(j.Steps-j.CommittedStep) * j.StepMs / 1000
	return &s
}

func etaText(j *ternv1.Job) string {
	if s := etaSeconds(j); s != nil {
		return fmtDuration(seconds(*s))
	}
	return "-"
}

// ageText is how long ago t was, as kubectl's AGE column shows it.
func ageText(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtDuration(now.Sub(t.AsTime()))
}

// watchJob prints a job and then every change of it that shows, until the
// job is over: table rows (flushed one by one, so the columns keep a
// minimum width rather than aligning to rows not seen yet), or one compact
// JSON object per line with -o json.
func watchJob(ctx context.Context, e *env, cf *clusterFlags, name, output string) error {
	if output != "" && output != "wide" && output != "json" {
		return usagef("-w prints a table or -o json (one object per line), not -o %s", output)
	}
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	stream, err := client.WatchJob(ctx, &ternv1.WatchJobRequest{Name: name})
	if err != nil {
		return rpcErr(cf.addr, "watch job "+name, err)
	}
	tw := tabwriter.NewWriter(e.stdout, 10, 0, 3, ' ', 0)
	if output != "json" {
		fmt.Fprintln(tw, jobHeader(output == "wide"))
	}
	last := ""
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil // the job is over
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C stops watching; the job goes on
			}
			return rpcErr(cf.addr, "watch job "+name, err)
		}
		var line string
		if output == "json" {
			b, err := json.Marshal(newJobView(resp.Job))
			if err != nil {
				return fmt.Errorf("encode json: %w", err)
			}
			line = string(b)
		} else {
			line = jobRow(resp.Job, output == "wide", e.now())
		}
		// The AGE and ETA columns change by themselves; a new row is
		// worth printing only when something else does.
		if line == last {
			continue // a change this view does not show
		}
		last = line
		fmt.Fprintln(tw, line)
		if err := tw.Flush(); err != nil {
			return err
		}
	}
}

func getWorkers(ctx context.Context, e *env, cf *clusterFlags, output string) error {
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := client.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
	if err != nil {
		return rpcErr(cf.addr, "list workers", err)
	}
	switch output {
	case "json", "yaml":
		views := make([]*workerView, len(resp.Workers))
		for i, w := range resp.Workers {
			views[i] = &workerView{Name: w.Name, Host: w.Host, Pid: w.Pid, Slots: w.Slots, UsedSlots: w.UsedSlots,
				FreeSlots: w.Slots - w.UsedSlots, Labels: w.Labels, Connected: w.Connected}
			if w.Registered != nil {
				t := w.Registered.AsTime()
				views[i].Registered = &t
			}
		}
		return writeStructured(e.stdout, output, map[string]any{"items": views})
	case "name":
		for _, w := range resp.Workers {
			fmt.Fprintf(e.stdout, "worker/%s\n", w.Name)
		}
		return nil
	}
	if len(resp.Workers) == 0 {
		fmt.Fprintln(e.stderr, "No workers: start one with `worker --coordinator ADDR`.")
		return nil
	}
	wide := output == "wide"
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 3, ' ', 0)
	head := "NAME\tHOST\tPID\tSLOTS\tFREE\tCONNECTED\tAGE"
	if wide {
		head += "\tLABELS"
	}
	fmt.Fprintln(tw, head)
	for _, w := range resp.Workers {
		row := fmt.Sprintf("%s\t%s\t%d\t%d\t%d\t%t\t%s", w.Name, w.Host, w.Pid, w.Slots, w.Slots-w.UsedSlots, w.Connected, ageText(w.Registered, e.now()))
		if wide {
			row += "\t" + labelsText(w.Labels)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// jobView is a job as -o json/yaml show it. Numbers that do not exist yet
// (no step reported, no eval) are null rather than a misleading zero.
type jobView struct {
	Name             string        `json:"name"`
	Phase            string        `json:"phase"`
	Reason           string        `json:"reason"`
	DataParallel     int32         `json:"data_parallel"`
	PipelineParallel int32         `json:"pipeline_parallel"`
	Steps            int64         `json:"steps"`
	CommittedStep    int64         `json:"committed_step"`
	ProgressPercent  float64       `json:"progress_percent"`
	LastLoss         *float64      `json:"last_loss"`
	TokensPerSecond  *float64      `json:"tokens_per_second"`
	Attempt          int32         `json:"attempt"`
	Restarts         int32         `json:"restarts"`
	MaxRestarts      int32         `json:"max_restarts"`
	StepMS           *float64      `json:"step_ms"`
	ETASeconds       *float64      `json:"eta_seconds"`
	Created          *time.Time    `json:"created"`
	Started          *time.Time    `json:"started"`
	Finished         *time.Time    `json:"finished"`
	Attempts         []attemptView `json:"attempts"`
	LastFailure      *failureView  `json:"last_failure"`
	// SnapshotStep is the last in-memory snapshot step the coordinator
	// committed (null: none yet, or snapshots off); Restores says where
	// each rank of each recovered attempt got its state, oldest first.
	SnapshotStep *int64          `json:"snapshot_step"`
	Restores     []restoreView   `json:"restores"`
	Ranks        []rankView      `json:"ranks"`
	Events       []eventView     `json:"events"`
	Summary      *summaryView    `json:"summary"`
	Spec         json.RawMessage `json:"spec,omitempty"`
	Version      uint64          `json:"version"`
}

type attemptView struct {
	Attempt   int32      `json:"attempt"`
	Started   time.Time  `json:"started"`
	Ended     *time.Time `json:"ended"`
	StartStep int64      `json:"start_step"`
	LastStep  int64      `json:"last_step"`
	Outcome   string     `json:"outcome"`
}

type failureView struct {
	Attempt int32      `json:"attempt"`
	Ranks   []int32    `json:"ranks"`
	Worker  string     `json:"worker"`
	Message string     `json:"message"`
	Time    *time.Time `json:"time"`
}

type rankView struct {
	Rank    int32  `json:"rank"`
	Worker  string `json:"worker"`
	Slot    int32  `json:"slot"`
	Address string `json:"address"`
	Phase   string `json:"phase"`
	Step    int64  `json:"step"`
	Error   string `json:"error,omitempty"`
}

// restoreView is one rank's restore in a recovered attempt. Worker is the
// worker the rank ran on, known for the current attempt only ("" else).
type restoreView struct {
	Attempt   int32   `json:"attempt"`
	Rank      int32   `json:"rank"`
	Source    string  `json:"source"`
	Step      int64   `json:"step"`
	RestoreMS float64 `json:"restore_ms"`
	Worker    string  `json:"worker,omitempty"`
	From      string  `json:"from"`
}

type eventView struct {
	Time     time.Time `json:"time"`
	Severity string    `json:"severity"`
	Reason   string    `json:"reason"`
	Message  string    `json:"message"`
}

type summaryView struct {
	Steps               int64    `json:"steps"`
	FinalLoss           *float64 `json:"final_loss"`
	FinalEvalLoss       *float64 `json:"final_eval_loss"`
	TokensPerSecond     float64  `json:"tokens_per_second"`
	StepMSMedian        float64  `json:"step_ms_median"`
	WallSeconds         float64  `json:"wall_seconds"`
	Params              int64    `json:"params"`
	PeakRSSBytes        int64    `json:"peak_rss_bytes"`
	OptimizerStateBytes int64    `json:"optimizer_state_bytes"`
	BytesSentPerStep    int64    `json:"bytes_sent_per_step"`
	BytesRecvPerStep    int64    `json:"bytes_recv_per_step"`
	Stopped             bool     `json:"stopped"`
}

type workerView struct {
	Name       string            `json:"name"`
	Host       string            `json:"host"`
	Pid        int32             `json:"pid"`
	Registered *time.Time        `json:"registered"`
	Slots      int32             `json:"slots"`
	UsedSlots  int32             `json:"used_slots"`
	FreeSlots  int32             `json:"free_slots"`
	Labels     map[string]string `json:"labels"`
	Connected  bool              `json:"connected"`
}

func newJobView(j *ternv1.Job) *jobView {
	v := &jobView{Name: j.Name, Phase: phaseName(j.Phase), Reason: j.Reason, DataParallel: j.DataParallel,
		PipelineParallel: j.PipelineParallel, Steps: j.Steps, CommittedStep: j.CommittedStep,
		ProgressPercent: progressPercent(j), Attempt: j.Attempt, Restarts: j.Restarts, MaxRestarts: j.MaxRestarts,
		Ranks: []rankView{}, Events: []eventView{}, Version: j.Version}
	if j.CommittedStep > 0 {
		v.LastLoss, v.TokensPerSecond = finite(j.LastLoss), finite(j.TokensPerSecond)
	}
	if json.Valid(j.SpecJson) {
		v.Spec = j.SpecJson
	}
	if j.StepMs > 0 {
		v.StepMS = &j.StepMs
	}
	v.ETASeconds = etaSeconds(j)
	v.Created, v.Started, v.Finished = timeOf(j.Created), timeOf(j.Started), timeOf(j.Finished)
	v.Attempts = []attemptView{}
	for _, a := range j.Attempts {
		v.Attempts = append(v.Attempts, attemptView{Attempt: a.Attempt, Started: a.Started.AsTime(), Ended: timeOf(a.Ended),
			StartStep: a.StartStep, LastStep: a.LastStep, Outcome: a.Outcome})
	}
	if f := j.LastFailure; f != nil {
		v.LastFailure = &failureView{Attempt: f.Attempt, Ranks: f.Ranks, Worker: f.Worker, Message: f.Message, Time: timeOf(f.Time)}
	}
	if j.SnapshotStep >= 0 {
		v.SnapshotStep = &j.SnapshotStep
	}
	v.Restores = []restoreView{}
	for _, r := range j.Restores {
		w := restoreWorker(j, r)
		v.Restores = append(v.Restores, restoreView{Attempt: r.Attempt, Rank: r.Rank, Source: r.Source, Step: r.Step,
			RestoreMS: r.RestoreMs, Worker: w, From: restoreFrom(j, r.Source, w)})
	}
	for _, r := range j.Ranks {
		v.Ranks = append(v.Ranks, rankView{Rank: r.Rank, Worker: r.Worker, Slot: r.Slot, Address: r.Address,
			Phase: enumName(r.Phase.String(), "RANK_PHASE_"), Step: r.Step, Error: r.Error})
	}
	for _, ev := range j.Events {
		v.Events = append(v.Events, eventView{Time: ev.Time.AsTime(), Severity: ev.Severity, Reason: ev.Reason, Message: ev.Message})
	}
	if s := j.Summary; s != nil {
		v.Summary = &summaryView{Steps: s.Steps, FinalLoss: finite(s.FinalLoss), FinalEvalLoss: finite(s.FinalEvalLoss),
			TokensPerSecond: s.TokensPerSecond, StepMSMedian: s.StepMsMedian, WallSeconds: s.WallSeconds, Params: s.Params,
			PeakRSSBytes: s.PeakRssBytes, OptimizerStateBytes: s.OptimizerStateBytes, BytesSentPerStep: s.BytesSentPerStep,
			BytesRecvPerStep: s.BytesRecvPerStep, Stopped: s.Stopped}
	}
	return v
}

// timeOf is a timestamp as JSON shows it, null when unset.
func timeOf(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime()
	return &v
}

// finite returns nil for NaN and ±Inf, which JSON cannot carry (a job
// that never evaluated has a NaN eval loss).
func finite(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

func writeStructured(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", format, err)
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// phaseName turns JOB_PHASE_SUCCEEDED into Succeeded, as the job state
// machine names its phases.
func phaseName(p ternv1.JobPhase) string { return enumName(p.String(), "JOB_PHASE_") }

func enumName(s, prefix string) string {
	s = strings.TrimPrefix(s, prefix)
	if s == "" {
		return s
	}
	return s[:1] + strings.ToLower(s[1:])
}

func progressPercent(j *ternv1.Job) float64 {
	if j.Steps <= 0 {
		return 0
	}
	return math.Round(1000*float64(j.CommittedStep)/float64(j.Steps)) / 10
}

func progressText(j *ternv1.Job) string {
	return fmt.Sprintf("%d/%d (%.0f%%)", j.CommittedStep, j.Steps, math.Floor(100*float64(j.CommittedStep)/math.Max(1, float64(j.Steps))))
}

func lossText(j *ternv1.Job) string {
	if j.CommittedStep == 0 || math.IsNaN(j.LastLoss) {
		return "-"
	}
	return fmt.Sprintf("%.4f", j.LastLoss)
}

func rateText(j *ternv1.Job) string {
	if j.CommittedStep == 0 || j.TokensPerSecond <= 0 {
		return "-"
	}
	return fmtCount(j.TokensPerSecond)
}

func labelsText(l map[string]string) string {
	if len(l) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, ",")
}

// oneLine keeps a table row on one line whatever a reason holds.
func oneLine(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Join(strings.Fields(s), " ")
}

// jobNames lists the coordinator's jobs for shell completion; nothing when
// it cannot be reached quickly.
func jobNames(cf *clusterFlags) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return nil
	}
	defer closeConn()
	resp, err := client.ListJobs(ctx, &ternv1.ListJobsRequest{})
	if err != nil {
		return nil
	}
	var names []string
	for _, j := range resp.Jobs {
		names = append(names, j.Name)
	}
	return names
}

func jobNameCompletion(cf *clusterFlags) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return jobNames(cf), cobra.ShellCompDirectiveNoFileComp
	}
}

// snapshotsOn reports whether the job's spec takes in-memory snapshots
// (spec.snapshot absent means the defaults, which do).
func snapshotsOn(j *ternv1.Job) bool {
	var js spec.TrainingJob
	if err := json.Unmarshal(j.SpecJson, &js); err != nil {
		return true
	}
	return js.Spec.SnapshotSettings().EverySteps > 0
}

// restoreWorker is the worker rank r of a restore ran on, where the
// status still shows it: the current attempt's ranks.
func restoreWorker(j *ternv1.Job, r *ternv1.RankRestore) string {
	if r.Attempt != j.Attempt {
		return ""
	}
	for _, rk := range j.Ranks {
		if rk.Rank == r.Rank {
			return rk.Worker
		}
	}
	return ""
}

// restoreFrom says in words where a restore's state came from.
func restoreFrom(j *ternv1.Job, source, worker string) string {
	on := "its worker"
	if worker != "" {
		on = worker
	}
	switch source {
	case "local":
		return "the in-memory copy on " + on
	case "peers":
		return "fragments held by other workers, decoded on " + on
	case "checkpoint":
		var js spec.TrainingJob
		if err := json.Unmarshal(j.SpecJson, &js); err == nil && js.Spec.Checkpoint.Dir != "" {
			return "the durable checkpoint in " + js.Spec.Checkpoint.Dir
		}
		return "the durable checkpoint (no spec.checkpoint.dir: the initial state)"
	case "initial":
		return "nothing: step 0, the initial state"
	}
	return source
}

// lastRestores is the latest restore of each rank, by rank.
func lastRestores(rs []*ternv1.RankRestore) []*ternv1.RankRestore {
	last := map[int32]*ternv1.RankRestore{}
	for _, r := range rs {
		if p, ok := last[r.Rank]; !ok || r.Attempt >= p.Attempt {
			last[r.Rank] = r
		}
	}
	out := make([]*ternv1.RankRestore, 0, len(last))
	for _, r := range last {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *ternv1.RankRestore) int { return int(a.Rank) - int(b.Rank) })
	return out
}
