package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/train"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

type planFlags struct {
	file   string
	sets   []string
	output string
	remote bool
}

func newPlanCmd(e *env, cf *clusterFlags) *cobra.Command {
	var f planFlags
	c := &cobra.Command{
		Use:   "plan -f JOB.yaml",
		Short: "Predict the memory of a training job before running it",
		Long: "Predict the memory one training process needs for a TrainingJob spec, without\n" +
			"building the model or reading the corpus: weights, gradients, optimizer state,\n" +
			"activations and the backward workspace, the tokenised corpus (when its size\n" +
			"follows from file sizes), and the process overhead. The total is the predicted\n" +
			"peak RSS that `ternctl train -o json` reports as peak_rss_bytes.\n\n" +
			"With --remote, or when --coordinator is given on the command line, the\n" +
			"coordinator computes the same plan (PlanJob) and also says whether its\n" +
			"workers could place the job now: free slots, spare slots, and the placement\n" +
			"the scheduler would make or why it cannot. --remote asks the coordinator\n" +
			"that other cluster commands use (--coordinator, TERN_COORDINATOR, or the\n" +
			"current context). Nothing is submitted.",
		Example: "  ternctl plan -f examples/demo.yaml\n" +
			"  ternctl plan -f job.yaml --set optimizer.name=apollo-mini -o json\n" +
			"  ternctl plan -f job.yaml --remote\n" +
			"  ternctl plan -f job.yaml --coordinator 10.0.0.5:7070",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.remote || cmd.Flags().Changed("coordinator") {
				return planRemote(cmd.Context(), e, cf, &f)
			}
			return planRun(e, &f)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.file, "filename", "f", "", "job spec file (YAML or JSON); - reads stdin")
	fl.StringArrayVar(&f.sets, "set", nil, "override a spec field, e.g. --set batch.microBatchSize=4 (repeatable)")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	fl.BoolVar(&f.remote, "remote", false, "ask the coordinator (its plan, plus whether the cluster can place the job now)")
	_ = c.MarkFlagFilename("filename", "yaml", "yml", "json")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	return c
}

func planRun(e *env, f *planFlags) error {
	if err := outputFlag(f.output); err != nil {
		return err
	}
	if f.file == "" {
		return usagef("no job spec: pass -f JOB.yaml (see examples/ for some)")
	}
	job, err := loadJob(e, f.file, f.sets)
	if err != nil {
		return err
	}
	p, err := train.Plan(job)
	if err != nil {
		return fmt.Errorf("%s: %w", f.file, err)
	}
	if f.output == "json" {
		out, err := json.Marshal(planJSON(p))
		if err != nil {
			return fmt.Errorf("encode plan: %w", err)
		}
		fmt.Fprintf(e.stdout, "%s\n", out)
		return nil
	}
	writePlanText(e.stdout, p, job.Spec.Model.Preset, job.Spec.Batch.MicroBatchSize, job.Spec.Model.Recompute)
	return nil
}

// planJSON is the plan with bytes per parameter for each line.
func planJSON(p *train.MemoryPlan) any {
	per := map[string]float64{}
	for _, l := range p.Lines() {
		per[l.Name] = bytesPerParam(l.Bytes, p.Params)
	}
	return struct {
		*train.MemoryPlan
		BytesPerParam map[string]float64 `json:"bytes_per_param"`
	}{p, per}
}

func bytesPerParam(b, params int64) float64 {
	if params == 0 {
		return 0
	}
	return float64(b) / float64(params)
}

// planNotes says what each line holds, in the table's last column.
var planNotes = map[string]string{
	"weights":             "float32 parameters",
	"gradients":           "held between steps",
	"optimizer":           "optimizer state (StateBytes)",
	"activations":         "one microbatch, saved for backward",
	"workspace":           "backward scratch shared by microbatches",
	"transient":           "GRASS full gradients at selection steps",
	"optimizer transient": "GaLore SVD buffers at projection refreshes",
	"runtime":             "Go runtime, tokenizer tables, GEMM panels",
	"total":               "predicted peak RSS",
}

func writePlanText(w io.Writer, p *train.MemoryPlan, preset string, micro int, recompute bool) {
	if preset == "" {
		preset = "custom"
	}
	act := "stored"
	if recompute {
		act = "recomputed"
	}
	fmt.Fprintf(w, "job %s: model %s, %s params, optimizer %s, microbatch %d, activations %s\n",
		p.Job, preset, fmtCount(float64(p.Params)), p.Optimizer, micro, act)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tBYTES\tBYTES/PARAM\tNOTE")
	for _, l := range p.Lines() {
		size := fmtBytes(l.Bytes)
		note := planNotes[l.Name]
		if l.Name == "data" {
			note = "tokenised corpus (" + p.DataSource + ")"
			if p.DataSource == train.DataUnknown {
				size = "unknown"
				note = "tokenised corpus: unknown without tokenising (BPE)"
			}
		}
		name := l.Name
		if name == "total" {
			name = "TOTAL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\n", name, size, bytesPerParam(l.Bytes, p.Params), note)
	}
	tw.Flush()
	if p.TokeniseMax > 0 {
		fmt.Fprintf(w, "The total assumes the corpus is in the token cache; a first run that tokenises it adds up to %s.\n", fmtBytes(p.TokeniseMax))
	}
	if len(p.Stages) > 1 {
		fmt.Fprintf(w, "\nPipeline stages, training state only (the table above is stage %d, the largest, with data and runtime added):\n", p.Stage)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STAGE\tPARAMS\tWEIGHTS\tOPTIMIZER\tACTIVATIONS\tIN FLIGHT\tTOTAL")
		for i, st := range p.Stages {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", i, fmtCount(float64(st.Params)), fmtBytes(st.Weights),
				fmtBytes(st.Optimizer), fmtBytes(st.Activations), st.InFlight, fmtBytes(st.Total))
		}
		tw.Flush()
	}
	if p.Workers > 1 {
		fmt.Fprintf(w, "Each of the %d workers holds the above. Gradient exchange per worker per step: %s sent, %s received (%s).\n",
			p.Workers, fmtBytes(p.ExchangeSent), fmtBytes(p.ExchangeRecv), p.Exchange)
	}
}

// planRemote asks the coordinator for the plan and whether its workers
// could place the job now. The spec goes as apply sends it: resolved, with
// its paths made absolute.
func planRemote(ctx context.Context, e *env, cf *clusterFlags, f *planFlags) error {
	if err := outputFlag(f.output); err != nil {
		return err
	}
	if f.file == "" {
		return usagef("no job spec: pass -f JOB.yaml (see examples/ for some)")
	}
	job, err := loadJob(e, f.file, f.sets)
	if err != nil {
		return err
	}
	for _, p := range []*string{&job.Spec.Data.Path, &job.Spec.Data.CacheDir, &job.Spec.Checkpoint.Dir} {
		if *p == "" || filepath.IsAbs(*p) {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("%s: make %q absolute: %w", f.file, *p, err)
		}
		*p = abs
	}
	doc := job.CanonicalJSON()
	if doc == nil {
		return fmt.Errorf("%s: the job spec cannot be encoded", f.file)
	}
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := client.PlanJob(ctx, &ternv1.PlanJobRequest{Spec: doc})
	if err != nil {
		return rpcErr(cf.addr, fmt.Sprintf("plan %s", f.file), err)
	}
	var p train.MemoryPlan
	if err := json.Unmarshal(resp.PlanJson, &p); err != nil {
		return fmt.Errorf("plan %s: the coordinator's plan is unreadable: %w", f.file, err)
	}
	if f.output == "json" {
		out, err := json.Marshal(struct {
			Plan      any    `json:"plan"`
			Ranks     int32  `json:"ranks"`
			Workers   int32  `json:"workers"`
			FreeSlots int32  `json:"free_slots"`
			FreeSpare int32  `json:"free_spare_slots"`
			Placeable bool   `json:"placeable"`
			Placement string `json:"placement"`
			SnapCode  string `json:"snapshot_code,omitempty"`
			SnapLocal int64  `json:"snapshot_local_bytes"`
			SnapHeld  int64  `json:"snapshot_held_bytes"`
			SnapSend  int64  `json:"snapshot_send_bytes"`
		}{planJSON(&p), resp.Ranks, resp.Workers, resp.FreeSlots, resp.FreeSpareSlots, resp.Placeable, resp.Placement,
			resp.SnapshotCode, resp.SnapshotLocalBytes, resp.SnapshotHeldBytes, resp.SnapshotSendBytes})
		if err != nil {
			return fmt.Errorf("encode plan: %w", err)
		}
		fmt.Fprintf(e.stdout, "%s\n", out)
		return nil
	}
	writePlanText(e.stdout, &p, job.Spec.Model.Preset, job.Spec.Batch.MicroBatchSize, job.Spec.Model.Recompute)
	fmt.Fprintf(e.stdout, "\nCluster at %s: workers %d, free slots %d, free spare slots %d; the job needs %d ranks.\n",
		cf.addr, resp.Workers, resp.FreeSlots, resp.FreeSpareSlots, resp.Ranks)
	if resp.Placeable {
		fmt.Fprintf(e.stdout, "It can be placed now: %s\n", resp.Placement)
		if resp.SnapshotCode != "" {
			fmt.Fprintf(e.stdout, "In-memory snapshots there (%s): each worker keeps up to %s of its ranks' staged copies and %s of its peers' fragments; a rank sends %s per peer snapshot.\n",
				resp.SnapshotCode, fmtBytes(resp.SnapshotLocalBytes), fmtBytes(resp.SnapshotHeldBytes), fmtBytes(resp.SnapshotSendBytes))
		}
	} else {
		fmt.Fprintf(e.stdout, "It cannot be placed now: %s\n", resp.Placement)
	}
	return nil
}
