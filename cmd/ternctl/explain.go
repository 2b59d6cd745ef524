package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/spec"
)

func newExplainCmd(e *env) *cobra.Command {
	var recursive bool
	c := &cobra.Command{
		Use:   "explain [FIELD]",
		Short: "Describe the fields of a TrainingJob spec",
		Long: "Describe a TrainingJob field: its type, default, allowed values and meaning,\n" +
			"and for an object the same for each of its fields. FIELD is a dotted path\n" +
			"from the document root or from spec (optimizer.lr = spec.optimizer.lr).",
		Example: "  ternctl explain\n  ternctl explain optimizer\n  ternctl explain optimizer.galore\n  ternctl explain spec.model.preset\n  ternctl explain spec --recursive",
		Args:    cobra.MaximumNArgs(1),
		ValidArgsFunction: func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []string
			for _, p := range spec.FieldPaths() {
				if strings.HasPrefix(p, prefix) {
					out = append(out, p)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(_ *cobra.Command, args []string) error {
			field := ""
			if len(args) == 1 {
				field = args[0]
			}
			explain := spec.Explain
			if recursive {
				explain = spec.ExplainRecursive
			}
			out, err := explain(field)
			if err != nil {
				return err
			}
			fmt.Fprint(e.stdout, out)
			return nil
		},
	}
	c.Flags().BoolVar(&recursive, "recursive", false, "list every field below FIELD as a tree of names and types")
	return c
}
