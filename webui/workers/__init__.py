"""Where jobs run: the queue (webui/jobs.py) hands each job to a worker behind one small interface.

base.py      the interface: a worker runs one job at a time and streams its events back
in_process.py  the default: the server's own executor, in a thread of the server (today's behaviour)
ray_worker.py  Ray actors, each with its own executor, model cache and device, on this machine or a cluster
dispatch.py  which pending job an idle worker takes
files.py     what travels with a job to a remote worker (input images) and back (saved images), as bytes
"""
