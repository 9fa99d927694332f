"""
What a Cola-DLM generation request is made of, independent of the models: its defaults and argument checks, the
rendering and tokenisation of its prompts, token sampling and stopping. Read by the pipeline, the modular blocks, the
command line and the server.
"""
