package pixelssql;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Set;

import org.apache.hadoop.conf.Configuration;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.connector.catalog.SupportsRead;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.catalog.TableCapability;
import org.apache.spark.sql.connector.read.Batch;
import org.apache.spark.sql.connector.read.InputPartition;
import org.apache.spark.sql.connector.read.PartitionReader;
import org.apache.spark.sql.connector.read.PartitionReaderFactory;
import org.apache.spark.sql.connector.read.Scan;
import org.apache.spark.sql.connector.read.ScanBuilder;
import org.apache.spark.sql.connector.read.SupportsPushDownRequiredColumns;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;
import org.apache.spark.unsafe.types.UTF8String;
import org.apache.spark.util.SerializableConfiguration;

/**
 * The relation of one listing, read when the query runs: {@code list_files} (every file and
 * every failure, {@link ListFiles#SCHEMA}) or {@code read_files} of a local folder with the
 * binaryFile source's columns ({@link #BINARY_FILE_SCHEMA}, files only, {@code content} read
 * only when selected).
 *
 * <p>A local folder is walked by several tasks side by side, each streaming its part of the
 * tree in path order ({@link LocalWalk}): the driver reads only the top levels, so it keeps
 * nothing per file, and a downstream function (dicom_meta) gets as many tasks. Other Hadoop file
 * systems are walked by one task.
 */
final class ListingTable implements Table, SupportsRead {

  /** The columns of Spark's binaryFile source, as a read gives them (nullable). */
  static final StructType BINARY_FILE_SCHEMA =
      new StructType()
          .add("path", DataTypes.StringType, true)
          .add("modificationTime", DataTypes.TimestampType, true)
          .add("length", DataTypes.LongType, true)
          .add("content", DataTypes.BinaryType, true);

  // Units of the walk per task wanted, and entries the driver may read to cut the tree.
  private static final int UNITS_PER_TASK = 4;
  private static final int PLAN_BUDGET = 20_000;

  private final String name;
  private final StructType schema;
  // What and how to walk; for a Hadoop file system only the path, glob and recursive count.
  private final LocalWalk.Scope scope;
  private final boolean rootIsFile;
  private final long maxLength;
  private final int parallelism;
  private final SerializableConfiguration hadoopConf; // null for a local path

  private ListingTable(
      String name,
      StructType schema,
      LocalWalk.Scope scope,
      boolean rootIsFile,
      long maxLength,
      int parallelism,
      SerializableConfiguration hadoopConf) {
    this.name = name;
    this.schema = schema;
    this.scope = scope;
    this.rootIsFile = rootIsFile;
    this.maxLength = maxLength;
    this.parallelism = parallelism;
    this.hadoopConf = hadoopConf;
  }

  /** A local listing; {@code root} exists, {@code rootIsFile} when it is not a folder. */
  static ListingTable local(
      String function,
      Path root,
      boolean rootIsFile,
      String glob,
      boolean recursive,
      LocalWalk.Naming naming,
      long maxLength,
      int parallelism,
      boolean nativeFolders)
      throws IOException {
    StructType schema =
        naming == LocalWalk.Naming.SPARK ? BINARY_FILE_SCHEMA : ListFiles.SCHEMA;
    return new ListingTable(
        function + "(" + root + ")",
        schema,
        LocalWalk.Scope.of(root, glob, recursive, naming, nativeFolders),
        rootIsFile,
        maxLength,
        parallelism,
        null);
  }

  /** A listing of a Hadoop file system (list_files' columns), walked by one task. */
  static ListingTable hadoop(String path, String glob, boolean recursive, Configuration conf) {
    LocalWalk.Scope scope = new LocalWalk.Scope(path, path, glob, recursive, null, false);
    return new ListingTable(
        ListFiles.FUNCTION_NAME + "(" + path + ")",
        ListFiles.SCHEMA,
        scope,
        false,
        0,
        1,
        new SerializableConfiguration(conf));
  }

  @Override
  public String name() {
    return name;
  }

  @Override
  @SuppressWarnings("deprecation")
  public StructType schema() {
    return schema;
  }

  @Override
  public Set<TableCapability> capabilities() {
    return Set.of(TableCapability.BATCH_READ);
  }

  @Override
  public ScanBuilder newScanBuilder(CaseInsensitiveStringMap options) {
    return new Builder();
  }

  /** Keeps only the columns a query reads: content is never read when no one selects it. */
  private final class Builder implements ScanBuilder, SupportsPushDownRequiredColumns {
    private StructType required = schema;

    @Override
    public void pruneColumns(StructType requiredSchema) {
      required = requiredSchema;
    }

    @Override
    public Scan build() {
      return new ListingScan(required);
    }
  }

  private final class ListingScan implements Scan, Batch {
    private final StructType required;

    ListingScan(StructType required) {
      this.required = required;
    }

    @Override
    public StructType readSchema() {
      return required;
    }

    @Override
    public String description() {
      return name;
    }

    @Override
    public Batch toBatch() {
      return this;
    }

    @Override
    public InputPartition[] planInputPartitions() {
      if (hadoopConf != null) {
        return new InputPartition[] {new Part(List.of())};
      }
      if (rootIsFile) {
        LocalWalk.Unit unit = LocalWalk.Unit.root(Paths.get(scope.root), true);
        return new InputPartition[] {new Part(List.of(unit))};
      }
      int tasks = Math.max(1, 2 * parallelism);
      List<LocalWalk.Unit> units =
          LocalWalk.plan(Paths.get(scope.root), scope, UNITS_PER_TASK * tasks, PLAN_BUDGET);
      List<List<LocalWalk.Unit>> groups = LocalWalk.group(units, tasks);
      InputPartition[] parts = new InputPartition[groups.size()];
      for (int i = 0; i < parts.length; i++) {
        parts[i] = new Part(groups.get(i));
      }
      return parts;
    }

    @Override
    public PartitionReaderFactory createReaderFactory() {
      return new Readers(scope, required, maxLength, hadoopConf);
    }
  }

  /** One task's part of the walk. */
  private static final class Part implements InputPartition {
    private static final long serialVersionUID = 1L;
    final List<LocalWalk.Unit> units;

    Part(List<LocalWalk.Unit> units) {
      this.units = new ArrayList<>(units);
    }
  }

  private static final class Readers implements PartitionReaderFactory {
    private static final long serialVersionUID = 1L;
    private final LocalWalk.Scope scope;
    private final StructType required;
    private final long maxLength;
    private final SerializableConfiguration hadoopConf;

    Readers(
        LocalWalk.Scope scope,
        StructType required,
        long maxLength,
        SerializableConfiguration hadoopConf) {
      this.scope = scope;
      this.required = required;
      this.maxLength = maxLength;
      this.hadoopConf = hadoopConf;
    }

    @Override
    public PartitionReader<InternalRow> createReader(InputPartition partition) {
      Iterator<FileListing.Entry> entries;
      if (hadoopConf != null) {
        try {
          entries =
              FileListing.list(scope.root, scope.glob, scope.recursive, hadoopConf.value())
                  .iterator();
        } catch (IOException e) {
          throw new UncheckedIOException(
              ListFiles.FUNCTION_NAME + ": cannot list " + scope.root + ": " + e, e);
        }
      } else {
        entries = new LocalWalk.Walker(scope, ((Part) partition).units);
      }
      return new Rows(entries, required, maxLength);
    }
  }

  /** The rows of the entries, with only the required columns. */
  private static final class Rows implements PartitionReader<InternalRow> {
    private static final InternalRow NO_COLUMNS = new GenericInternalRow(new Object[0]);
    private final Iterator<FileListing.Entry> entries;
    private final String[] columns;
    private final long maxLength;
    private InternalRow row;

    Rows(Iterator<FileListing.Entry> entries, StructType required, long maxLength) {
      this.entries = entries;
      StructField[] fields = required.fields();
      this.columns = new String[fields.length];
      for (int i = 0; i < fields.length; i++) {
        columns[i] = fields[i].name();
      }
      this.maxLength = maxLength;
    }

    @Override
    public boolean next() {
      if (!entries.hasNext()) {
        return false;
      }
      FileListing.Entry entry = entries.next();
      if (columns.length == 0) {
        row = NO_COLUMNS; // count(*): one empty row serves every entry
        return true;
      }
      Object[] values = new Object[columns.length];
      for (int i = 0; i < columns.length; i++) {
        values[i] = value(entry, columns[i]);
      }
      row = new GenericInternalRow(values);
      return true;
    }

    private Object value(FileListing.Entry entry, String column) {
      switch (column) {
        case "path":
          return UTF8String.fromString(entry.path);
        case "modificationTime":
          return entry.modificationTime == null ? null : entry.modificationTime * 1000L;
        case "length":
          return entry.length;
        case "reason":
          return entry.reason == null ? null : UTF8String.fromString(entry.reason);
        case "message":
          return entry.message == null ? null : UTF8String.fromString(entry.message);
        case "content":
          return content(entry);
        default:
          throw new IllegalStateException("no column " + column);
      }
    }

    /** The whole file, as the binaryFile source reads it (and with the same size limit). */
    private byte[] content(FileListing.Entry entry) {
      String local = entry.path.substring("file:".length());
      if (entry.length != null && entry.length > maxLength) {
        throw new IllegalArgumentException(
            "The length of "
                + entry.path
                + " is "
                + entry.length
                + ", which exceeds the maximum length allowed: "
                + maxLength
                + " (spark.sql.sources.binaryFile.maxLength)");
      }
      try {
        return Files.readAllBytes(Paths.get(local));
      } catch (IOException e) {
        throw new UncheckedIOException("read_files: cannot read " + entry.path + ": " + e, e);
      }
    }

    @Override
    public InternalRow get() {
      return row;
    }

    @Override
    public void close() {}
  }
}
