"""The embedded broker: a kombu transport over one SQLite file, for Celery on one machine.

Modules: `transport` (the kombu channel and transport, Celery options, housekeeping, queue
depths), `store` (the broker file's tables and statements), `doorbell` (wake-ups and consumer
liveness). Redis or RabbitMQ replace it by URL (``broker.url``); nothing else in MicroClaw
knows which broker runs.

Capability card, compared with kombu's Redis transport:

=====================  ==========================================  =============================
                       SQLite (this package)                       kombu Redis
=====================  ==========================================  =============================
direct routing         yes; bindings in the file, shared by all     yes (bindings in Redis)
                       processes
topic routing          yes (kombu's ``*``/``#`` patterns)           yes
fanout                 yes: a copy per bound queue, stored; a       yes: pub/sub, only to
                       queue bound later sees nothing earlier       connected subscribers
Celery remote control  yes (inspect, control, status, ping)         yes
Celery events          yes (``driver_type`` is ``sqlite``)          yes
mingle / gossip        off (Celery enables them for amqp/redis)     on
acks                   ack deletes the row; until then the          unacked hash, restored after
                       message is owned by its consumer             ``visibility_timeout``
requeue / reject       back to its original place in the queue      to the head of the list
consumer death         its unacked messages come back in order as   after the visibility
                       soon as another consumer notices (kernel-    timeout (default 1 h)
                       visible: its doorbell FIFO has no reader)
visibility timeout     none: a live but hung consumer keeps its     yes
                       messages (as on RabbitMQ without
                       ``consumer_timeout``)
redelivered flag       yes (``delivery_info['redelivered']``)       yes
priorities             no: strict FIFO per queue                    yes (``priority_steps``)
x-expires (queue)      yes: no consumer for that long -> deleted    yes
                       (by consumers' reap and ``cleanup``)
x-message-ttl          no (Celery's pidbox/event messages carry     no
                       their own ``expires``)
wake-up                doorbell FIFO per consumer beside the file;  BRPOP / pub/sub
                       backstop poll ``broker.polling_interval``
reach                  processes on one machine sharing the file    any host on the network
limits                 one writer at a time (SQLite); each          memory-bound
                       statement holds the lock for microseconds;
                       no message size limit beyond SQLite's 1 GB
=====================  ==========================================  =============================

Tasks must be idempotent (MicroClaw's are): at-least-once means a message is delivered again
when its consumer dies after the work but before the ack.
"""
