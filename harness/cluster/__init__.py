"""Stages placed on several hosts through Ray (the optional ``cluster`` extra).

``local`` starts and stops a local multi-node Ray cluster (one loopback address per node) with the ``ray`` command;
``actors`` holds the Ray actors that run on the nodes (a stage process each, a node agent each); ``placement``
connects to a cluster and places a run's stages on its hosts; ``remote`` is the orchestrator's handle on a stage
run by an actor. Only ``placement``, ``remote`` and ``actors`` import ray, and only a run given a cluster imports
them: the single-host default never imports ray.
"""
