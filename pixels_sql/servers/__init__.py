"""Long-running endpoints over one home: ``serve`` (Thrift/JDBC + Spark Connect) and the way
other processes find and reach it (``discovery``)."""
