package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

func newPauseCmd(e *env, cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "pause NAME",
		Short: "Stop a job's ranks and free its slots until it is resumed",
		Long: "Stop a job's ranks, each after its current step, and free their slots; the job\n" +
			"stays Paused until `ternctl resume`. Ranks write a checkpoint as they stop when\n" +
			"the job has spec.checkpoint.dir, and resume continues from it; a job without a\n" +
			"checkpoint directory starts again from step 0 when resumed.",
		Example:           "  ternctl pause tiny\n  ternctl resume tiny",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: jobNameCompletion(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, closeConn, err := connect(cmd.Context(), cf)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := client.PauseJob(cmd.Context(), &ternv1.PauseJobRequest{Name: args[0]})
			if err != nil {
				return rpcErr(cf.addr, "pause job "+args[0], err)
			}
			fmt.Fprintf(e.stdout, "job/%s paused\n", args[0])
			fmt.Fprintln(e.stderr, resumeNote(resp.Job))
			return nil
		},
	}
}

// resumeNote says what resuming the job will do.
func resumeNote(j *ternv1.Job) string {
	var js spec.TrainingJob
	if err := json.Unmarshal(j.SpecJson, &js); err == nil && js.Spec.Checkpoint.Dir == "" {
		return fmt.Sprintf("job/%s has no spec.checkpoint.dir, so `ternctl resume %s` starts it again from step 0", j.Name, j.Name)
	}
	return fmt.Sprintf("its ranks write a checkpoint as they stop; `ternctl resume %s` continues from it", j.Name)
}

func newResumeCmd(e *env, cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "resume NAME",
		Short:             "Place a paused job again and continue it",
		Long:              "Place a paused job again, as its next attempt. Its ranks continue from the\nlatest checkpoint in spec.checkpoint.dir, or from step 0 without one.",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: jobNameCompletion(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, closeConn, err := connect(cmd.Context(), cf)
			if err != nil {
				return err
			}
			defer closeConn()
			if _, err := client.ResumeJob(cmd.Context(), &ternv1.ResumeJobRequest{Name: args[0]}); err != nil {
				return rpcErr(cf.addr, "resume job "+args[0], err)
			}
			fmt.Fprintf(e.stdout, "job/%s resumed\n", args[0])
			return nil
		},
	}
}
