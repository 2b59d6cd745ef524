package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

type applyFlags struct {
	file string
	sets []string
}

func newApplyCmd(e *env, cf *clusterFlags) *cobra.Command {
	var f applyFlags
	c := &cobra.Command{
		Use:     "apply -f JOB.yaml",
		Aliases: []string{"submit"},
		Short:   "Submit a TrainingJob to the coordinator",
		Long: "Submit a TrainingJob to the coordinator, which places its ranks on workers.\n\n" +
			"The spec is checked here first, with the same messages as `train`. Its\n" +
			"paths (spec.data.path, spec.data.cacheDir, spec.checkpoint.dir) are made\n" +
			"absolute, since workers do not share this working directory. Applying the\n" +
			"same spec again changes nothing; a different spec under a name in use is\n" +
			"refused (delete the old job first).",
		Example: "  ternctl apply -f examples/tiny.yaml\n" +
			"  ternctl apply -f job.yaml --set steps=100 --set metadata.name=run2",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return applyRun(cmd.Context(), e, cf, &f)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.file, "filename", "f", "", "job spec file (YAML or JSON); - reads stdin")
	fl.StringArrayVar(&f.sets, "set", nil, "override a spec field, e.g. --set optimizer.lr=1e-3 (repeatable; lists as [a,b])")
	_ = c.MarkFlagFilename("filename", "yaml", "yml", "json")
	return c
}

func applyRun(ctx context.Context, e *env, cf *clusterFlags, f *applyFlags) error {
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
	// The resolved spec, overrides applied, goes as canonical JSON: the
	// coordinator then sees exactly what was checked here.
	doc := job.CanonicalJSON()
	if doc == nil {
		return fmt.Errorf("%s: the job spec cannot be encoded", f.file)
	}
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	resp, err := client.ApplyJob(ctx, &ternv1.ApplyJobRequest{Spec: doc})
	if err != nil {
		return rpcErr(cf.addr, fmt.Sprintf("apply %s", f.file), err)
	}
	verb := "created"
	if !resp.Created {
		verb = "unchanged"
	}
	fmt.Fprintf(e.stdout, "job/%s %s\n", resp.GetJob().GetName(), verb)
	return nil
}
