# "Nothing lost": reliability tests with real processes on loopback (ctest -R reliability).
# Each starts its own broker and workers on a free port, bounds every wait, and has a
# test-level deadline (h_init, 60 s) below the ctest timeout here.
foreach(scenario
        worker_kill     # a: SIGKILL a worker mid-job -> done elsewhere, attempts 2
        broker_kill     # b: SIGKILL the broker under 3,000 jobs -> all done exactly once
        worker_stop     # c: SIGSTOP a worker -> detected, moved; SIGCONT -> first result wins
        idem            # d: a repeated idem key gives one job
        time_limit      # e: a time limit reaches the worker and frees its slot
        cancel          # f: cancelling a running job frees its slot at once
        retries         # g: a job failing everywhere: every reason kept; node backoff
        retention       # h: --retention purges finished jobs
        reregister      # i: a worker unknown to a restarted broker registers again
        durability      # j: --durability normal and full keep acknowledged jobs
        ids             # k: a job id is never handed out twice, even after SIGKILL
        flap            # l: a worker frozen on attempt 2: lost, then its late run is one row
        runs            # n: broker SIGKILL while runs go: every run executed is recorded
        grace           # o: a job waits a grace period for an able node that just went offline
        deps            # p: SIGKILL the broker mid 3-stage chain -> all done once, in order
        arrays          # q: SIGKILL the broker mid array -> every element done once
        pipeline)       # r: SIGKILL the broker mid 300-job 3-stage pipeline -> done once, in
                        #    order, stage 2 with its parents' results as inputs
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_reliability_${scenario}.c)
    gq_integration_test(reliability_${scenario} test_reliability_${scenario}.c 90)
  endif()
endforeach()

# m: the disk fills while jobs run: kept, retried, each job ends once; stats, top and /metrics
# say so (the last needs libmicrohttpd).
if(MHD_FOUND)
  gq_integration_test(reliability_disk test_reliability_disk.c 90)
  target_link_libraries(reliability_disk PRIVATE gq_brokercore)
  set_tests_properties(reliability_disk PROPERTIES SKIP_RETURN_CODE 77)
endif()

# Prefetch by behaviour: none for unmeasured or slow kinds, a prefetched job shown by EXPLAIN,
# recalled unstarted (no attempt counted) when its worker dies or a free node could take it,
# cancelled before it runs.
gq_integration_test(integration_prefetch test_prefetch.c 120)
# The worker's side of prefetch against a fake broker: waiting jobs start by priority; RECALL
# gives back only what has not started.
gq_integration_test(integration_worker_order test_worker_order.c 60)
