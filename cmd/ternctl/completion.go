package main

import (
	"github.com/spf13/cobra"
)

func newCompletionCmd(e *env, root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: "Print a shell completion script to stdout. Besides commands and flags, it\n" +
			"completes job names for get, describe, logs, wait, cancel and delete by asking\n" +
			"the coordinator (of the current context, or --coordinator) at the moment of\n" +
			"completing, with a short timeout and quietly nothing when none answers, and\n" +
			"context names for `config use-context`.\n\n" +
			"  bash:  source <(ternctl completion bash)\n" +
			"  zsh:   ternctl completion zsh > \"${fpath[1]}/_ternctl\"\n" +
			"  fish:  ternctl completion fish > ~/.config/fish/completions/ternctl.fish",
		Args:                  cobra.ExactArgs(1),
		ValidArgs:             []string{"bash", "zsh", "fish"},
		DisableFlagsInUseLine: true,
		RunE: func(_ *cobra.Command, args []string) error {
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(e.stdout, true)
			case "zsh":
				return root.GenZshCompletion(e.stdout)
			case "fish":
				return root.GenFishCompletion(e.stdout, true)
			}
			return usagef("shell %q is not supported (allowed: bash, zsh, fish)", args[0])
		},
	}
}
