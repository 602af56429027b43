; The sub-zone file. A short negative TTL (the SOA minimum) matters: a failed validation is
; cached by resolvers for that long. The seed used 12 hours; a few minutes is enough.
$ORIGIN .
$TTL 300
service.example.com     IN SOA  dns.example.com. postmaster.example.com. (
                                1          ; serial
                                21600      ; refresh (6 hours)
                                1800       ; retry (30 minutes)
                                1209600    ; expire (2 weeks)
                                300        ; minimum: negative-caching TTL (5 minutes)
                                )
                        NS      dns.example.com.
                        A       192.0.2.19
; In the parent zone example.com, the A record of `service` is replaced by a delegation:
;   service          IN      NS      dns.example.com.
