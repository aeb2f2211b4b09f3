"""What lessons use to draw and measure, one module per idea.

Core and JetStream: ``subjects``, ``fanout``, ``streams``, ``kvstore``.  Clustering: ``failover``,
``topoview``.  Security: ``security``.  Monitoring and performance: ``fleet``, ``prometheus``,
``monitoring``, ``bench``, ``magics`` (``%nats``).  Patterns: ``services`` (the Node.js service),
``flows``, ``eventstore``, ``coordination``, ``processing``.  Operations: ``deploy`` (Compose),
``backup``, ``faults``.  Capstone: ``capstone``.
"""
