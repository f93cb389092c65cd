# CLI tests. cli_offline: the gridq binary alone (usage errors, local job checks, help texts,
# an unreachable broker). cli: the whole command-line contract against a real broker and two
# CPU workers on a loopback port of its own; skipped (77) when those binaries are not built.
gq_shell_test(cli_offline test_cli_offline.sh 60)
gq_shell_test(cli test_cli.sh 180)
# cli_refused: submit --file through a rate limit, and past a per-client cap that refuses part of it.
gq_shell_test(cli_refused test_cli_refused.sh 120)
# disk_full: the store on a 600 KiB tmpfs (needs root to mount; skipped otherwise).
gq_shell_test(disk_full test_disk_full.sh 90)
# deps: dependencies through the CLI (--after-ok, --after-any, --after-fail): order, waiting,
# cancel reasons and their cascade, refusals.
gq_shell_test(cli_deps test_deps.sh 120)
# arrays: job arrays through the CLI (--array with %K, status, wait, cancel, --after-ok ARRAY).
gq_shell_test(cli_arrays test_arrays.sh 150)
# pipeline: a pipeline in one JOBS.jsonl (names, after_ok by name, inputs), its failure and retry.
gq_shell_test(cli_pipeline test_pipeline.sh 120)
