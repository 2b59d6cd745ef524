// Command ternctl is the tern command-line client.
//
//	ternctl train -f job.yaml [--set k=v]... [--checkpoint-dir DIR] [--resume PATH] [-o text|json] [--metrics-out FILE] [--quiet]
//	ternctl plan -f job.yaml [--set k=v]... [--remote] [-o text|json]
//	ternctl export CHECKPOINT|JOB --out DIR [--max-shard-size N]
//	ternctl generate SOURCE --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--seed S]
//	ternctl eval SOURCE [-f job.yaml] [-o text|json]
//	ternctl explain [FIELD] [--recursive]
//	ternctl version [-o text|json]
//	ternctl completion bash|zsh|fish
//	ternctl certs create --dir DIR --hosts HOST,... [--days N]
//	ternctl up [--workers N] [--slots S] [--spares S] [--dir DIR] [--no-restart]
//	ternctl down [--dir DIR] [--purge]
//	ternctl config get-contexts | current-context | use-context NAME | view
//	ternctl config set-context NAME [--coordinator ADDR] [--token-file F] [--tls-ca F]
//
// and, against a coordinator (--coordinator ADDR, $TERN_COORDINATOR, the
// current context's (ternctl config), default 127.0.0.1:7070; beyond loopback also --tls-ca FILE and --token-file FILE,
// $TERN_TLS_CA and $TERN_TOKEN_FILE, as certs create made them):
//
//	ternctl apply -f job.yaml [--set k=v]...          (alias submit)
//	ternctl get jobs [NAME [-w]] | workers [-o wide|json|yaml|name]
//	ternctl describe job NAME
//	ternctl wait NAME [--timeout D]
//	ternctl cancel NAME
//	ternctl delete job NAME...
//	ternctl logs NAME [-f] [--rank R] [--attempt N] [--tail N] [--since D]
//	ternctl pause NAME | resume NAME
//	ternctl top NAME [-w]
//	ternctl plan -f job.yaml --remote
//
// Like kubectl, it writes the data a command produces (a run's summary,
// explain text, completion scripts) to stdout and everything else (the
// header, progress, eval lines, warnings, errors) to stderr, so scripts can
// capture stdout alone. Exit codes: 0 success, 1 error (including an
// invalid job spec), 2 usage error (unknown flag or command, missing
// argument), 130 training interrupted by Ctrl-C or SIGTERM (the run stopped
// cleanly, after a checkpoint if one was configured). A second Ctrl-C exits
// at once. A command that finds no coordinator, or one that is standing
// by, exits 3. wait exits 0 when the job succeeded, 1 failed, 2 cancelled,
// 3 on a usage or connection error (or an unknown job), 124 when --timeout
// passed first.
package main
