"""Print an nginx configuration that puts gymhttp nodes behind one address.

    python deploy/nginx_conf.py --listen 0.0.0.0:8080 --node a=10.0.0.1:5000 --node b=10.0.0.2:5000 > gymhttp.conf
    nginx -p "$PWD/run" -c "$PWD/gymhttp.conf" -e "$PWD/run/error.log" -g 'daemon off;'

Each node runs with --node-id NAME, so that its instance ids start with
NAME-; the gateway sends /v1/envs/NAME-... to node NAME, creates to the node
with the fewest connections (moving on when one refuses the connection, which
it can do safely: the request never reached that node), and everything else
to any node that answers.  A node that is down answers as JSON, 502, naming
it.  The configuration runs as an unprivileged user and writes only under the
prefix (-p): its pid file, logs and temporary files; it does not set
``daemon``, so that ``-g 'daemon off;'`` can.  Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

# The longest a request may take: a long step of a slow simulator, or a
# create that builds a big env, must not be cut off by the gateway.
LONG = "3600s"


def node_down(name: str, address: str) -> str:
    """The JSON body nginx answers with when node ``name`` does not."""
    message = (f"Node {name} ({address}) does not answer: it is down or restarting. Its instances lived in its "
               "memory and are gone if it died; create new ones (POST /v1/envs/), which go to a node that answers")
    return json.dumps({"message": message})


def config(listen: str, nodes: list[tuple[str, str]]) -> str:
    """The configuration, as text."""
    upstreams = []
    for name, address in nodes:
        upstreams.append(f"""    upstream node_{name} {{
        server {address};
        keepalive 16;
    }}
""")
    everyone = "".join(f"        server {address} max_fails=1 fail_timeout=5s;\n" for _, address in nodes)
    locations = []
    for name, address in nodes:
        body = node_down(name, address).replace("\\", "\\\\").replace("'", "\\'")
        locations.append(f"""        location ^~ /v1/envs/{name}- {{
            proxy_pass http://node_{name};
            error_page 502 503 504 = @down_{name};
        }}
        location @down_{name} {{
            default_type application/json;
            return 502 '{body}';
        }}
""")
    names = ", ".join(name for name, _ in nodes)
    everyone_down = json.dumps({"message": f"No node answers ({names}); start them, then try again"})
    return f"""# gymhttp gateway: {len(nodes)} nodes ({names}), written by deploy/nginx_conf.py.
# Run: nginx -p PREFIX -c THIS_FILE -e PREFIX/error.log -g 'daemon off;'
# Every path below is relative to PREFIX: nothing is written outside it.

pid gymhttp-nginx.pid;
error_log error.log warn;
worker_processes auto;

events {{
    worker_connections 4096;
}}

http {{
    access_log access.log;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

{"".join(upstreams)}
    # Creates: to the node with the fewest connections.
    upstream create {{
        least_conn;
{everyone}        keepalive 16;
    }}

    # Everything that belongs to no instance: any node that answers.
    upstream any {{
{everyone}        keepalive 16;
    }}

    server {{
        listen {listen};

        # Connections to the nodes stay open (HTTP/1.1 keep-alive); the client's
        # Host (the nodes check it and Origin against it) and Authorization go on.
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_connect_timeout 5s;
        proxy_send_timeout {LONG};
        proxy_read_timeout {LONG};
        send_timeout {LONG};
        client_body_timeout {LONG};
        client_max_body_size 0;          # the node enforces --max-body
        proxy_request_buffering off;     # bodies go on as they come
        proxy_buffering off;             # so do replies
        # Only when a node cannot be reached: nginx's own 502/504, as JSON. The
        # nodes' own errors (their 503 at shutdown, 504 past --env-timeout) pass.
        proxy_next_upstream error;       # a refused connection: the request never left, so try another node

{"".join(locations)}
        location = /v1/envs/ {{
            if ($request_method = POST) {{
                proxy_pass http://create;
            }}
            proxy_pass http://any;
            error_page 502 503 504 = @everyone_down;
        }}
        location = /v1/envs {{
            if ($request_method = POST) {{
                proxy_pass http://create;
            }}
            proxy_pass http://any;
            error_page 502 503 504 = @everyone_down;
        }}
        location / {{
            proxy_pass http://any;
            error_page 502 503 504 = @everyone_down;
        }}
        location @everyone_down {{
            default_type application/json;
            return 502 '{everyone_down}';
        }}
    }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where the gateway listens (e.g. 0.0.0.0:8080)")
    parser.add_argument("--node", action="append", required=True, metavar="NAME=HOST:PORT",
                        help="a gymhttp node started with --node-id NAME; repeatable")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[^\s;{}]+:\d{1,5}", args.listen):
        parser.error(f"--listen must be HOST:PORT, not {args.listen!r}")
    nodes = []
    for text in args.node:
        name, sep, address = text.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]{1,32}", name) or not re.fullmatch(r"[^\s;{}]+:\d{1,5}", address):
            parser.error(f"--node must be NAME=HOST:PORT with NAME letters, digits or _ (its --node-id), not {text!r}")
        if name in (n for n, _ in nodes):
            parser.error(f"node {name} is given twice")
        nodes.append((name, address))
    sys.stdout.write(config(args.listen, nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
