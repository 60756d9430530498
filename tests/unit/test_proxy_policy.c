// SPDX-License-Identifier: Apache-2.0
// Unit tests for the proxy's cluster policy (src/roles/proxy/proxy_policy.c): the ejection
// arithmetic (base time times the ejection count, the cap, the multiplier's decay, the
// max_ejection_percent share), outlier detection driven by recorded statuses on a fake clock
// (eject at exactly the threshold, readmit exactly when the time is up, a success in between resets
// the run), the retry budget and breaker slots, the load balancer skipping ejected and
// health-check-failed endpoints under both policies, and the hand-over of state on reload.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/config.h"
#include "roles/proxy/proxy_conn.h"
#include "roles/proxy/proxy_policy.h"

static struct proxy_policy_cfg defaults(void)
{
    struct proxy_policy_cfg pc;
    memset(&pc, 0, sizeof(pc));
    sc_config_defaults(proxy_policy_opts, &pc);
    return pc;
}

static void test_defaults(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults();
    assert_int_equal(pc.circuit_breakers.max_connections, 1024);
    assert_int_equal(pc.circuit_breakers.max_pending_requests, 1024);
    assert_int_equal(pc.circuit_breakers.max_requests, 1024);
    assert_int_equal(pc.circuit_breakers.max_retries, 1024);
    assert_true(pc.circuit_breakers.retry_budget.budget_percent == 20.0);
    assert_int_equal(pc.circuit_breakers.retry_budget.min_retry_concurrency, 3);
    assert_int_equal(pc.outlier_detection.consecutive_5xx, 5);
    assert_int_equal(pc.outlier_detection.consecutive_gateway_errors, 0);
    assert_int_equal(pc.outlier_detection.interval_ms, 30000);
    assert_int_equal(pc.outlier_detection.base_ejection_time_ms, 30000);
    assert_int_equal(pc.outlier_detection.max_ejection_time_ms, 300000);
    assert_int_equal(pc.outlier_detection.max_ejection_percent, 50);
    assert_null(pc.health_check.path);
}

static void test_ejection_time(void **state)
{
    (void)state;
    struct proxy_policy p = { .base_ejection_ms = 30000, .max_ejection_ms = 300000 };
    assert_int_equal(proxy_ejection_ms(&p, 1), 30000);
    assert_int_equal(proxy_ejection_ms(&p, 2), 60000);
    assert_int_equal(proxy_ejection_ms(&p, 3), 90000);
    assert_int_equal(proxy_ejection_ms(&p, 10), 300000);
    assert_int_equal(proxy_ejection_ms(&p, 11), 300000);
    assert_int_equal(proxy_ejection_ms(&p, 0), 30000);
    /* A cap below the base does not apply (as Envoy: the base wins). */
    struct proxy_policy q = { .base_ejection_ms = 1000, .max_ejection_ms = 500 };
    assert_int_equal(proxy_ejection_ms(&q, 4), 4000);
    /* No overflow with a huge count. */
    struct proxy_policy r = { .base_ejection_ms = 86400000, .max_ejection_ms = 86400000 };
    assert_int_equal(proxy_ejection_ms(&r, UINT32_MAX), 86400000);
}

static void test_may_eject(void **state)
{
    (void)state;
    assert_true(proxy_may_eject(0, 2, 50));
    assert_false(proxy_may_eject(1, 2, 50));
    assert_false(proxy_may_eject(0, 1, 50)); /* a lone endpoint stays under 50% */
    assert_true(proxy_may_eject(0, 1, 100));
    assert_true(proxy_may_eject(0, 10, 10));
    assert_false(proxy_may_eject(1, 10, 10));
    assert_true(proxy_may_eject(2, 4, 75));
    assert_false(proxy_may_eject(3, 4, 75));
    assert_false(proxy_may_eject(0, 3, 0));
    assert_false(proxy_may_eject(0, 0, 100));
    assert_true(proxy_may_eject(1, 3, 67));
    assert_false(proxy_may_eject(1, 3, 66));
}

static void test_decay(void **state)
{
    (void)state;
    assert_int_equal(proxy_ejections_decay(3, 0, 30000), 3);
    assert_int_equal(proxy_ejections_decay(3, 29999, 30000), 3);
    assert_int_equal(proxy_ejections_decay(3, 30000, 30000), 2);
    assert_int_equal(proxy_ejections_decay(3, 65000, 30000), 1);
    assert_int_equal(proxy_ejections_decay(3, 1000000, 30000), 0);
    assert_int_equal(proxy_ejections_decay(0, 1000000, 30000), 0);
}

static void test_retry_limit(void **state)
{
    (void)state;
    struct proxy_policy p = { .budget_percent = 20,
                              .min_retry_concurrency = 3,
                              .max_retries = 1024 };
    assert_int_equal(proxy_retry_limit(&p, 0), 3);
    assert_int_equal(proxy_retry_limit(&p, 10), 3);
    assert_int_equal(proxy_retry_limit(&p, 19), 3);
    assert_int_equal(proxy_retry_limit(&p, 20), 4);
    assert_int_equal(proxy_retry_limit(&p, 24), 4);
    assert_int_equal(proxy_retry_limit(&p, 25), 5);
    assert_int_equal(proxy_retry_limit(&p, 100), 20);
    p.max_retries = 5;
    assert_int_equal(proxy_retry_limit(&p, 100), 5);
    p.max_retries = 1024;
    p.budget_percent = 0;
    p.min_retry_concurrency = 2;
    assert_int_equal(proxy_retry_limit(&p, 1000), 2);
    p.budget_percent = 100;
    p.min_retry_concurrency = 0;
    assert_int_equal(proxy_retry_limit(&p, 7), 7);
}

/* A cluster of <n> endpoints with the state proxy_rt_new would give it. */
struct fake {
    struct proxy_cluster c;
    struct proxy_endpoint eps[4];
    char *names[4];
};

static void fake_init(struct fake *f, size_t n, const struct proxy_policy_cfg *pc, int lb)
{
    static char *names[] = { "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80" };
    memset(f, 0, sizeof(*f));
    f->c.name = "c";
    f->c.lb = lb;
    f->c.eps = f->eps;
    f->c.neps = n;
    f->c.st = proxy_cluster_state_new("c", pc, names, n, NULL);
    for (size_t i = 0; i < n; i++) {
        f->eps[i].name = names[i];
        f->eps[i].cluster = &f->c;
        f->eps[i].st = &f->c.st->eps[i];
        atomic_store(&f->eps[i].naddrs, 1);
    }
}

static void test_outlier_consecutive_5xx(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults();
    pc.outlier_detection.base_ejection_time_ms = 1000;
    pc.outlier_detection.interval_ms = 5000;
    struct fake f;
    fake_init(&f, 2, &pc, PROXY_LB_ROUND_ROBIN);
    struct proxy_endpoint *bad = &f.eps[0];
    uint64_t t = 100000;
    for (int i = 0; i < 4; i++) {
        proxy_outlier_record(bad, 503, t);
    }
    proxy_outlier_record(bad, 200, t); /* a success resets the run */
    for (int i = 0; i < 4; i++) {
        proxy_outlier_record(bad, 500, t);
        assert_true(proxy_endpoint_usable(bad, t));
    }
    proxy_outlier_record(bad, 500, t); /* the fifth in a row */
    assert_false(proxy_endpoint_usable(bad, t));
    assert_int_equal(atomic_load(&f.c.st->ejected), 1);
    assert_int_equal(atomic_load(&bad->st->ejections), 1);
    assert_false(proxy_endpoint_usable(bad, t + 999));
    /* The sibling cannot be ejected too: 2 of 2 is over 50%. */
    for (int i = 0; i < 10; i++) {
        proxy_outlier_record(&f.eps[1], 503, t);
    }
    assert_true(proxy_endpoint_usable(&f.eps[1], t));
    assert_int_equal(atomic_load(&f.c.st->ejected), 1);
    /* Readmitted exactly when the time is up. */
    assert_true(proxy_endpoint_usable(bad, t + 1000));
    assert_int_equal(atomic_load(&f.c.st->ejected), 0);
    /* Ejected again within an interval: twice the base time. */
    t += 2000;
    for (int i = 0; i < 5; i++) {
        proxy_outlier_record(bad, 503, t);
    }
    assert_false(proxy_endpoint_usable(bad, t + 1999));
    assert_true(proxy_endpoint_usable(bad, t + 2000));
    /* After two full intervals admitted, the count decays from 2 to 0: the next is 1x again. */
    t += 2000 + 10000;
    for (int i = 0; i < 5; i++) {
        proxy_outlier_record(bad, 503, t);
    }
    assert_int_equal(atomic_load(&bad->st->ejections), 1);
    assert_false(proxy_endpoint_usable(bad, t + 999));
    assert_true(proxy_endpoint_usable(bad, t + 1000));
    proxy_cluster_state_unref(f.c.st);
}

static void test_outlier_gateway_errors(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults();
    pc.outlier_detection.consecutive_5xx = 0;
    pc.outlier_detection.consecutive_gateway_errors = 3;
    struct fake f;
    fake_init(&f, 2, &pc, PROXY_LB_ROUND_ROBIN);
    struct proxy_endpoint *ep = &f.eps[1];
    for (int i = 0; i < 10; i++) {
        proxy_outlier_record(ep, 500, 1000); /* not a gateway error */
    }
    assert_true(proxy_endpoint_usable(ep, 1000));
    proxy_outlier_record(ep, 502, 1000);
    proxy_outlier_record(ep, 504, 1000);
    proxy_outlier_record(ep, 500, 1000); /* breaks the run */
    proxy_outlier_record(ep, 503, 1000);
    proxy_outlier_record(ep, 503, 1000);
    assert_true(proxy_endpoint_usable(ep, 1000));
    proxy_outlier_record(ep, 503, 1000);
    assert_false(proxy_endpoint_usable(ep, 1000));
    proxy_cluster_state_unref(f.c.st);
}

static void test_outlier_off(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults();
    pc.outlier_detection.consecutive_5xx = 0;
    struct fake f;
    fake_init(&f, 2, &pc, PROXY_LB_ROUND_ROBIN);
    for (int i = 0; i < 100; i++) {
        proxy_outlier_record(&f.eps[0], 503, 1000);
    }
    assert_true(proxy_endpoint_usable(&f.eps[0], 1000));
    proxy_cluster_state_unref(f.c.st);
}

static void pick_skips(int lb)
{
    struct proxy_policy_cfg pc = defaults();
    pc.outlier_detection.max_ejection_percent = 100;
    struct fake f;
    fake_init(&f, 3, &pc, lb);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct proxy_worker w;
    memset(&w, 0, sizeof(w));
    w.loop = &loop;
    w.rng[0] = 0x1234567;
    w.rng[1] = 0x89abcdef;
    uint64_t now = uv_now(&loop);
    /* All usable: each endpoint gets picked. */
    int seen[3] = { 0 };
    for (int i = 0; i < 300; i++) {
        struct proxy_endpoint *e = proxy_pick_endpoint(&w, &f.c, NULL);
        assert_non_null(e);
        seen[e - f.eps]++;
    }
    assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    /* eps[0] ejected, eps[1] failed its health checks: only eps[2] is left. */
    for (int i = 0; i < 5; i++) {
        proxy_outlier_record(&f.eps[0], 503, now);
    }
    atomic_store(&f.eps[1].st->hc_failed, true);
    for (int i = 0; i < 300; i++) {
        assert_ptr_equal(proxy_pick_endpoint(&w, &f.c, NULL), &f.eps[2]);
        /* Avoiding the last one still gives it: there is no other. */
        assert_ptr_equal(proxy_pick_endpoint(&w, &f.c, &f.eps[2]), &f.eps[2]);
    }
    /* An endpoint with no address (DNS not resolved yet) is skipped the same way. */
    atomic_store(&f.eps[1].st->hc_failed, false);
    atomic_store(&f.eps[1].naddrs, 0);
    for (int i = 0; i < 100; i++) {
        assert_ptr_equal(proxy_pick_endpoint(&w, &f.c, NULL), &f.eps[2]);
    }
    /* Nothing usable: no endpoint, which the data path answers with 503 UH. */
    atomic_store(&f.eps[2].st->hc_failed, true);
    assert_null(proxy_pick_endpoint(&w, &f.c, NULL));
    /* The ejection ends: eps[0] is back, alone. */
    atomic_store(&f.eps[0].st->ejected_until_ms, now); /* time is up */
    assert_ptr_equal(proxy_pick_endpoint(&w, &f.c, NULL), &f.eps[0]);
    assert_int_equal(atomic_load(&f.c.st->ejected), 0);
    uv_loop_close(&loop);
    proxy_cluster_state_unref(f.c.st);
}

static void test_pick_round_robin(void **state)
{
    (void)state;
    pick_skips(PROXY_LB_ROUND_ROBIN);
}

static void test_pick_least_request(void **state)
{
    (void)state;
    pick_skips(PROXY_LB_LEAST_REQUEST);
}

static void test_pick_least_request_prefers_idle(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults();
    struct fake f;
    fake_init(&f, 2, &pc, PROXY_LB_LEAST_REQUEST);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct proxy_worker w;
    memset(&w, 0, sizeof(w));
    w.loop = &loop;
    w.rng[0] = 42;
    w.rng[1] = 7;
    atomic_store(&f.eps[0].active, 10);
    int busy = 0;
    for (int i = 0; i < 200; i++) {
        busy += proxy_pick_endpoint(&w, &f.c, NULL) == &f.eps[0];
    }
    /* P2C picks the busy one only when both draws land on it: about a quarter of the time. */
    assert_true(busy > 20 && busy < 90);
    uv_loop_close(&loop);
    proxy_cluster_state_unref(f.c.st);
}

static void test_breakers(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults();
    pc.circuit_breakers.max_requests = 2;
    pc.circuit_breakers.max_connections = 1;
    pc.circuit_breakers.retry_budget.budget_percent = 0;
    pc.circuit_breakers.retry_budget.min_retry_concurrency = 1;
    struct fake f;
    fake_init(&f, 1, &pc, PROXY_LB_ROUND_ROBIN);
    struct proxy_exch a, b, c;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    assert_true(proxy_breaker_request(&f.c, &a));
    assert_true(proxy_breaker_request(&f.c, &b));
    assert_false(proxy_breaker_request(&f.c, &c));
    assert_false(c.rq_held);
    /* One retry at a time: the budget's minimum. A request keeps its slot over more retries. */
    assert_true(proxy_breaker_retry(&a));
    assert_true(proxy_breaker_retry(&a));
    assert_false(proxy_breaker_retry(&b));
    proxy_breaker_release(&a);
    assert_int_equal(atomic_load(&f.c.st->retries), 0);
    assert_true(proxy_breaker_retry(&b));
    assert_true(proxy_breaker_request(&f.c, &c));
    proxy_breaker_release(&b);
    proxy_breaker_release(&c);
    assert_int_equal(atomic_load(&f.c.st->rq), 0);
    assert_int_equal(atomic_load(&f.c.st->retries), 0);
    /* Connections: one open at most; a pending slot is held until connected. */
    assert_true(proxy_breaker_connect(&f.c));
    assert_false(proxy_breaker_connect(&f.c));
    assert_int_equal(atomic_load(&f.c.st->pending), 1);
    proxy_breaker_connected(&f.c);
    proxy_breaker_closed(&f.c);
    assert_true(proxy_breaker_connect(&f.c));
    proxy_breaker_connected(&f.c);
    proxy_breaker_closed(&f.c);
    assert_int_equal(atomic_load(&f.c.st->cx), 0);
    assert_int_equal(atomic_load(&f.c.st->pending), 0);
    proxy_cluster_state_unref(f.c.st);
}

static void test_carry(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults(), pc7 = defaults();
    pc7.outlier_detection.consecutive_5xx = 7;
    struct fake oc, od, nc, nd;
    fake_init(&oc, 2, &pc, PROXY_LB_ROUND_ROBIN);  /* old "c" */
    fake_init(&od, 2, &pc, PROXY_LB_ROUND_ROBIN);  /* old "d" */
    fake_init(&nc, 2, &pc, PROXY_LB_ROUND_ROBIN);  /* new "c": unchanged */
    fake_init(&nd, 2, &pc7, PROXY_LB_ROUND_ROBIN); /* new "d": another threshold */
    od.c.name = nd.c.name = "d";
    for (int i = 0; i < 5; i++) {
        proxy_outlier_record(&oc.eps[1], 503, 1000);
    }
    assert_false(proxy_endpoint_usable(&oc.eps[1], 1000));
    struct proxy_cluster olds[2] = { oc.c, od.c };
    struct proxy_cluster news[2] = { nc.c, nd.c };
    struct proxy_rt ort = { .clusters = olds, .nclusters = 2 };
    struct proxy_rt nrt = { .clusters = news, .nclusters = 2 };
    struct proxy_cluster_state *fresh_d = news[1].st;
    proxy_policy_carry(&nrt, &ort);
    assert_ptr_equal(news[0].st, oc.c.st);
    assert_ptr_equal(nc.eps[1].st, &oc.c.st->eps[1]);
    assert_int_equal(atomic_load(&oc.c.st->refs), 2);
    assert_false(proxy_endpoint_usable(&nc.eps[1], 1000)); /* still ejected in the new one */
    assert_ptr_equal(news[1].st, fresh_d);                 /* the key changed: fresh state */
    proxy_cluster_state_unref(news[0].st);
    proxy_cluster_state_unref(news[1].st);
    proxy_cluster_state_unref(olds[0].st);
    proxy_cluster_state_unref(olds[1].st);
}

static void test_check(void **state)
{
    (void)state;
    struct proxy_policy_cfg pc = defaults();
    char *ok[] = { "200-299", "404" };
    char *bad1[] = { "99" };
    char *bad2[] = { "300-200" };
    char *bad3[] = { "2xx" };
    char *err = NULL;
    pc.health_check.expected_statuses = (struct sc_strv){ ok, 2 };
    assert_int_equal(proxy_policy_check(&pc, "c", &err), 0);
    char **bads[] = { bad1, bad2, bad3 };
    for (size_t i = 0; i < 3; i++) {
        pc.health_check.expected_statuses = (struct sc_strv){ bads[i], 1 };
        assert_int_equal(proxy_policy_check(&pc, "c", &err), SC_ECONFIG);
        assert_non_null(strstr(err, "expected status"));
        sc_free(err);
        err = NULL;
    }
    pc.health_check.expected_statuses = (struct sc_strv){ NULL, 0 };
    pc.health_check.path = "healthz";
    assert_int_equal(proxy_policy_check(&pc, "c", &err), SC_ECONFIG);
    sc_free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_ejection_time),
        cmocka_unit_test(test_may_eject),
        cmocka_unit_test(test_decay),
        cmocka_unit_test(test_retry_limit),
        cmocka_unit_test(test_outlier_consecutive_5xx),
        cmocka_unit_test(test_outlier_gateway_errors),
        cmocka_unit_test(test_outlier_off),
        cmocka_unit_test(test_pick_round_robin),
        cmocka_unit_test(test_pick_least_request),
        cmocka_unit_test(test_pick_least_request_prefers_idle),
        cmocka_unit_test(test_breakers),
        cmocka_unit_test(test_carry),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
