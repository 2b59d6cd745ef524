// Command ternctl is the tern command-line client.
//
//	ternctl train -f job.yaml [--set k=v]... [--checkpoint-dir DIR] [--resume PATH] [-o text|json] [--metrics-out FILE] [--quiet]
//	ternctl explain [FIELD] [--recursive]
//	ternctl version [-o text|json]
//	ternctl completion bash|zsh|fish
//
// Like kubectl, it writes the data a command produces (a run's summary,
// explain text, completion scripts) to stdout and everything else (the
// header, progress, eval lines, warnings, errors) to stderr, so scripts can
// capture stdout alone. Exit codes: 0 success, 1 error (including an
// invalid job spec), 2 usage error (unknown flag or command, missing
// argument), 130 training interrupted by Ctrl-C or SIGTERM (the run stopped
// cleanly, after a checkpoint if one was configured). A second Ctrl-C exits
// at once.
package main
