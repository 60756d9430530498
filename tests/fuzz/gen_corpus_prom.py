#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpus for fuzz_prom (tests/fuzz/corpus/prom): the first byte selects the format
# ('t' = 0x74, even: Prometheus text 0.0.4; 'o' = 0x6f, odd: OpenMetrics 1.0), the rest is an
# exposition. Valid documents of every construct plus malformed ones the parser must reject.
# Re-running rewrites these files and leaves others (inputs the fuzzer found) alone.
import os

HERE = os.path.dirname(os.path.abspath(__file__))

TEXT = {
    "ok-counter": '# HELP http_requests_total The total number of HTTP requests.\n'
                  '# TYPE http_requests_total counter\n'
                  'http_requests_total{method="post",code="200"} 1027 1395066363000\n'
                  'http_requests_total{method="post",code="400"}    3 1395066363000\n',
    "ok-escapes": 'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",'
                  'error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9\n'
                  '# HELP h help with \\\\ and \\n\n',
    "ok-inf-nan": 'a +Inf\nb -Inf\nc NaN\nd 1e-300 -5\n',
    "ok-histogram": '# HELP h A histogram.\n# TYPE h histogram\n'
                    'h_bucket{le="0.05"} 24054\nh_bucket{le="0.1"} 33444\n'
                    'h_bucket{le="+Inf"} 144320\nh_sum 53423\nh_count 144320\n',
    "ok-summary": '# TYPE rpc summary\nrpc{quantile="0.01"} 3102\nrpc{quantile="0.99"} 76656\n'
                  'rpc_sum 1.7560473e+07\nrpc_count 2693\n',
    "ok-comments-blank": '# a comment\n\n  # TYPE g gauge\ng{a="1",} 2\n\n',
    "ok-noeol": 'x 1',
    "ok-interleaved": 'a 1\nb 2\na{x="y"} 3\n',
    "bad-escape": 'a{b="\\x"} 1\n',
    "bad-dup-label": 'a{b="1",b="2"} 1\n',
    "bad-second-type": '# TYPE a counter\n# TYPE a gauge\na 1\n',
    "bad-bucket-no-le": '# TYPE h histogram\nh_bucket 1\n',
    "bad-value": 'a 1x\n',
    "bad-ts": 'a 1 1.5\n',
    "bad-cr": 'a 1\r\n',
}

OM = {
    "ok-om-full": '# TYPE acme_http_router_request_seconds summary\n'
                  '# UNIT acme_http_router_request_seconds seconds\n'
                  '# HELP acme_http_router_request_seconds Latency though all of ACME\'s router.\n'
                  'acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32\n'
                  'acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0\n'
                  'acme_http_router_request_seconds_created{path="/api/v1",method="GET"} '
                  '1605281325.0\n'
                  '# TYPE foo counter\n'
                  'foo_total 17.0 1520879607.789 # {trace_id="KOO5S4vxi0o"} 0.67\n'
                  'foo_created 1520430000.123\n'
                  '# TYPE build info\nbuild_info{version="1.0"} 1\n'
                  '# TYPE st stateset\nst{st="a"} 1\nst{st="b"} 0\n'
                  '# TYPE gh gaugehistogram\ngh_bucket{le="1"} 2\ngh_bucket{le="+Inf"} 3\n'
                  'gh_gcount 3\ngh_gsum 4\n'
                  '# EOF\n',
    "ok-om-histogram": '# TYPE h histogram\nh_bucket{le="1"} 0 # {a="b"} 0.5 123.4\n'
                       'h_bucket{le="+Inf"} 1\nh_count 1\nh_sum 2\nh_created 5\n# EOF',
    "ok-om-escaped-help": '# HELP a \\"q\\" \\\\ \\n\n# TYPE a gauge\na{x="\\""} -1.5 -2.25\n# EOF\n',
    "bad-om-no-eof": 'a 1\n',
    "bad-om-blank": 'a 1\n\n# EOF\n',
    "bad-om-counter-no-total": '# TYPE c counter\nc 1\n# EOF\n',
    "bad-om-unit": '# TYPE a_seconds gauge\n# UNIT a_seconds bytes\n# EOF\n',
    "bad-om-interleaved": 'a 1\nb 1\na 2\n# EOF\n',
}


def main():
    out = os.path.join(HERE, "corpus", "prom")
    os.makedirs(out, exist_ok=True)
    for name, text in TEXT.items():
        with open(os.path.join(out, "t-" + name), "wb") as f:
            f.write(b"t" + text.encode())
    for name, text in OM.items():
        with open(os.path.join(out, "o-" + name), "wb") as f:
            f.write(b"o" + text.encode())


if __name__ == "__main__":
    main()
