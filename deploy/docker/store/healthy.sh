#!/bin/bash
# Healthy once FerretDB says it is ready (its /debug/readyz pings PostgreSQL); no curl in the root.
exec 3<>/dev/tcp/127.0.0.1/8088
printf 'GET /debug/readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r status <&3
[[ "$status" == *" 200 "* ]]
